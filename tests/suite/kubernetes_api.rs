//! Kubernetes API mode for birth dependencies (`KUBEXIT_POD_NAME`,
//! docs/kubernetes-api.md), against the real kube-apiserver of
//! `../shared/peers/k8s` (`util/k8s.rs`). Each test has a namespace of its
//! own with the Role and RoleBinding of docs/rbac.md, a Pod whose status it
//! sets through the status subresource as the kubelet would, and a service
//! account mount with a token from the TokenRequest API
//! (`util/cluster_pod.rs`); kubexit finds the server through
//! `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, as in a pod.
//!
//! Where a test must see kubexit's requests (how many, whether its watch is
//! open, which token they carry), kubexit talks to the server through a
//! relay that records them and forwards them unchanged (`util/relay.rs`):
//! the server keeps no request log of its own that a test could read.
//!
//! The fake server of `util/fake_apiserver.rs` is kept for what the real
//! one cannot be made to show on demand; the last tests use it and say why.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use cluster_pod::{Account, Container, Endpoint, NOT_READY, POD, READY, Scene, Waiting};
use fake_apiserver::ApiServer;
use nix::sys::signal::Signal;
use relay::{Exchange, Relay};

use crate::util::{
    self, Kubexit, Running, Yard, assert_contains, assert_lacks, cluster_pod, eventually,
    fake_apiserver, kubexit, loopback_tls, relay,
};

/// A kubexit named `client` whose birth dependency is the pod's `server`
/// container, with this service account mount; its child prints
/// `started`. The birth timeout is long: a kubexit that waits when it
/// should not fails at the harness's deadline instead.
fn client(yard: &Yard, account: &Account, namespace: &str) -> Kubexit {
    let mut k = Kubexit::named("client", yard);
    account.configure(&mut k);
    k.env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_NAMESPACE", namespace)
        .env("KUBEXIT_BIRTH_TIMEOUT", "10m")
        .sh("echo started");
    k
}

/// Spawns `k` and waits until the server has answered its watch: a kubexit
/// in the middle of its wait, which hears of changes through that watch.
fn waiting(k: &mut Kubexit, relay: &Relay) -> Running {
    let running = k.spawn();
    relay.wait_for_open_watch();
    running
}

fn assert_started(run: util::Finished) {
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "started\n", "{}", run.stderr);
    assert_lacks(&run.stderr, "panicked");
}

fn assert_never_started(run: &util::Finished, yard: &Yard, code: i32) {
    assert_eq!(run.code(), code, "{}", run.stderr);
    assert_eq!(run.stdout, "", "the child must not start\n{}", run.stderr);
    assert_lacks(&run.stderr, "panicked");
    let stone = yard.read("client").expect("tombstone");
    assert_contains(&stone, "Died:");
    assert_lacks(&stone, "Born:");
}

/// Whether the exchanges are one list, then one watch, both answered 200,
/// both for this pod only.
fn one_list_then_one_watch(exchanges: &[Exchange]) -> bool {
    let selects_the_pod = |e: &Exchange| {
        e.method == "GET"
            && e.status == Some(200)
            && e.target
                .contains(&format!("fieldSelector=metadata.name%3D{POD}"))
    };
    matches!(exchanges, [list, watch]
    if selects_the_pod(list) && !list.is_watch()
        && selects_the_pod(watch) && watch.is_watch()
        // From the list's version, not from "any".
        && watch.target.split(['?', '&']).any(|p| {
            p.strip_prefix("resourceVersion=").is_some_and(|v| !v.is_empty() && v != "0")
        }))
}

#[test]
fn ready_at_the_first_list() {
    let Some(scene) = Scene::new("ready_at_the_first_list") else {
        return;
    };
    scene.create_pod(&[("server", READY), ("client", NOT_READY)], &[]);
    let relay = scene.relay();
    let account = scene.account(Endpoint::of(&relay));
    let yard = Yard::new();
    assert_started(client(&yard, &account, &scene.namespace).run());
    let exchanges = relay.exchanges();
    let first = &exchanges[0];
    assert!(
        !first.is_watch()
            && first.status == Some(200)
            && first
                .target
                .starts_with(&format!("/api/v1/namespaces/{}/pods?", scene.namespace))
            && first
                .target
                .contains(&format!("fieldSelector=metadata.name%3D{POD}")),
        "{exchanges:?}"
    );
    let lists = exchanges.iter().filter(|e| !e.is_watch()).count();
    assert_eq!(lists, 1, "{exchanges:?}");
}

/// No polling: the status changes only once the server has answered
/// kubexit's watch, and kubexit starts its child without asking anything
/// more. A client that polled would need another list to see the change;
/// the relay would have recorded it.
#[test]
fn ready_after_a_status_update_heard_through_the_watch_without_polling() {
    let test = "ready_after_a_status_update_heard_through_the_watch_without_polling";
    let Some(Waiting {
        scene,
        relay,
        account,
        yard,
    }) = Waiting::new(test)
    else {
        return;
    };
    let running = waiting(&mut client(&yard, &account, &scene.namespace), &relay);
    assert_eq!(running.stdout(), "", "{}", running.stderr());
    scene.set_status(&[("server", READY), ("client", NOT_READY)], &[]);
    assert_started(running.finish());
    let exchanges = relay.exchanges();
    assert!(one_list_then_one_watch(&exchanges), "{exchanges:#?}");
}

/// Native sidecars report in `initContainerStatuses`. (The v1.28 server,
/// without its alpha SidecarContainers gate, drops the init container's
/// `restartPolicy: Always` from the stored spec; the statuses are what
/// kubexit reads, and those it keeps.)
#[test]
fn a_native_sidecar_in_init_container_statuses_counts() {
    let test = "a_native_sidecar_in_init_container_statuses_counts";
    let Some(scene) = Scene::new(test) else {
        return;
    };
    scene.create_pod(&[("client", NOT_READY)], &[("server", Container::Waiting)]);
    let account = scene.account(scene.server());
    let yard = Yard::new();
    let running = client(&yard, &account, &scene.namespace).spawn();
    running.wait_for_log("Watching pod");
    scene.set_status(&[("client", NOT_READY)], &[("server", READY)]);
    assert_started(running.finish());
}

/// The ServiceAccount has no Role: the server refuses (403), kubexit says
/// so once with the Role to add, and retries with the backoff the docs
/// promise, from 200 ms doubling: the relay sees the attempts at least
/// that far apart (a bound that load can only widen), which a loop that
/// retries at once or at a fixed pace is not. The Role and RoleBinding of
/// docs/rbac.md, applied as written while kubexit waits, are enough: it
/// proceeds.
#[test]
fn forbidden_is_explained_once_then_granted_while_waiting() {
    let test = "forbidden_is_explained_once_then_granted_while_waiting";
    let Some(scene) = Scene::without_rights(test) else {
        return;
    };
    scene.create_pod(&[("server", READY), ("client", NOT_READY)], &[]);
    let relay = scene.relay();
    let account = scene.account(Endpoint::of(&relay));
    let yard = Yard::new();
    let running = client(&yard, &account, &scene.namespace).spawn();
    running.wait_for_log("Warning: 403 Forbidden");
    let refused = || -> Vec<Exchange> {
        let exchanges = relay.exchanges();
        exchanges
            .into_iter()
            .filter(|e| e.status == Some(403))
            .collect()
    };
    eventually("five refused attempts", || refused().len() >= 5);
    let attempts = refused();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
    let backoff = (0..4).map(|i| Duration::from_millis(200 << i));
    assert!(
        gaps.iter().zip(backoff).all(|(gap, wait)| *gap >= wait),
        "attempts closer than a backoff from 200 ms doubling: {gaps:?}"
    );
    let log = running.stderr();
    let ns = &scene.namespace;
    // The server's words, then kubexit's: what to grant, and where.
    assert!(
        log.contains(&format!(
            "cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\""
        )) && log.contains(&format!("get, list and watch pods in namespace {ns}"))
            && log.contains("Role")
            && log.contains("RoleBinding")
            && log.contains("docs/rbac.md"),
        "{log}"
    );
    scene.grant();
    let run = running.finish();
    assert_eq!(
        run.stderr.matches("Warning: 403 Forbidden").count(),
        1,
        "said once, not at every retry:\n{}",
        run.stderr
    );
    assert_contains(&run.stderr, "answers again");
    assert_started(run);
}

#[test]
fn a_pod_that_does_not_exist_is_said_and_named_by_the_timeout() {
    let test = "a_pod_that_does_not_exist_is_said_and_named_by_the_timeout";
    let Some(scene) = Scene::new(test) else {
        return;
    };
    let account = scene.account(scene.server());
    let yard = Yard::new();
    let run = client(&yard, &account, &scene.namespace)
        .env("KUBEXIT_BIRTH_TIMEOUT", "5s")
        .run();
    assert_never_started(&run, &yard, 1);
    let pod = format!("pod {}/{POD}", scene.namespace);
    assert!(
        run.stderr.contains(&format!(
            "Warning: {pod} is not in the list of pods; check KUBEXIT_POD_NAME and \
             KUBEXIT_NAMESPACE"
        )) && run.stderr.contains(&format!(
            "birth dependencies not ready after 5s: server (pod not seen yet); last \
             Kubernetes API error: {pod} is not in the list of pods"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_pod_created_while_waiting_is_found() {
    let Some(scene) = Scene::new("a_pod_created_while_waiting_is_found") else {
        return;
    };
    let account = scene.account(scene.server());
    let yard = Yard::new();
    let running = client(&yard, &account, &scene.namespace).spawn();
    running.wait_for_log("is not in the list of pods");
    scene.create_pod(&[("server", READY), ("client", NOT_READY)], &[]);
    let run = running.finish();
    assert_contains(&run.stderr, "answers again");
    assert_started(run);
}

#[test]
fn the_timeout_names_what_is_still_awaited() {
    let Some(scene) = Scene::new("the_timeout_names_what_is_still_awaited") else {
        return;
    };
    scene.pod_not_ready();
    let account = scene.account(scene.server());
    let yard = Yard::new();
    let run = client(&yard, &account, &scene.namespace)
        .env("KUBEXIT_BIRTH_DEPS", "server,sidecar")
        .env("KUBEXIT_BIRTH_TIMEOUT", "5s")
        .run();
    assert_never_started(&run, &yard, 1);
    assert_contains(
        &run.stderr,
        &format!(
            "birth dependencies not ready after 5s: server (running, not ready), \
             sidecar (not a container of pod {}/{POD}; its containers: server, client)",
            scene.namespace
        ),
    );
}

/// `restartPolicy: Never`: a container that terminated will never be
/// ready, and the server itself refuses to make it run again. kubexit
/// hears it through its watch and gives up at once, long before the
/// timeout.
#[test]
fn a_dependency_terminated_for_good_fails_fast() {
    let Some(Waiting {
        scene,
        relay,
        account,
        yard,
    }) = Waiting::new("a_dependency_terminated_for_good_fails_fast")
    else {
        return;
    };
    let running = waiting(&mut client(&yard, &account, &scene.namespace), &relay);
    scene.set_status(
        &[("server", Container::Terminated(3)), ("client", NOT_READY)],
        &[],
    );
    let run = running.finish();
    assert_never_started(&run, &yard, 1);
    assert_contains(&run.stderr, "Birth dependency died: server");
    let exchanges = relay.exchanges();
    assert!(one_list_then_one_watch(&exchanges), "{exchanges:#?}");
}

#[test]
fn sigterm_during_the_wait_means_the_child_never_starts() {
    let test = "sigterm_during_the_wait_means_the_child_never_starts";
    let Some(Waiting {
        scene,
        relay,
        account,
        yard,
    }) = Waiting::new(test)
    else {
        return;
    };
    let running = waiting(&mut client(&yard, &account, &scene.namespace), &relay);
    running.signal(Signal::SIGTERM);
    let run = running.finish();
    assert_never_started(&run, &yard, 128 + 15);
    assert_contains(&run.stderr, "Received signal: SIGTERM");
}

#[test]
fn a_death_dependency_dying_during_the_wait_ends_it() {
    let test = "a_death_dependency_dying_during_the_wait_ends_it";
    let Some(Waiting {
        scene,
        relay,
        account,
        yard,
    }) = Waiting::new(test)
    else {
        return;
    };
    let mut k = client(&yard, &account, &scene.namespace);
    let running = waiting(k.env("KUBEXIT_DEATH_DEPS", "main"), &relay);
    yard.bury("main");
    let run = running.finish();
    assert_never_started(&run, &yard, 0);
    assert_contains(&run.stderr, "New death: main");
}

#[test]
fn the_namespace_comes_from_the_service_account() {
    let Some(scene) = Scene::new("the_namespace_comes_from_the_service_account") else {
        return;
    };
    scene.create_pod(&[("server", READY), ("client", NOT_READY)], &[]);
    let account = scene.account(scene.server());
    let yard = Yard::new();
    let mut k = client(&yard, &account, &scene.namespace);
    k.env_remove("KUBEXIT_NAMESPACE");
    let run = k.run();
    assert_contains(
        &run.stderr,
        &format!(
            "Watching pod {}/{POD} at {}",
            scene.namespace, scene.cluster.url
        ),
    );
    assert_started(run);
}

#[test]
fn a_wrong_token_is_refused_and_said() {
    let Some(scene) = Scene::new("a_wrong_token_is_refused_and_said") else {
        return;
    };
    scene.create_pod(&[("server", READY), ("client", NOT_READY)], &[]);
    let account = scene.account(scene.server());
    account.rotate("not-a-token-of-this-cluster");
    let yard = Yard::new();
    let run = client(&yard, &account, &scene.namespace)
        .env("KUBEXIT_BIRTH_TIMEOUT", "5s")
        .run();
    assert_never_started(&run, &yard, 1);
    assert_eq!(
        run.stderr.matches("Warning: 401 Unauthorized").count(),
        1,
        "said once, then retried quietly:\n{}",
        run.stderr
    );
    assert_contains(
        &run.stderr,
        "server (pod not seen yet); last Kubernetes API error: 401 Unauthorized",
    );
}

/// The kubelet rotates projected service account tokens. Here the first
/// token is bound to a Secret: once the new token is in the mount, the
/// Secret is deleted and the server refuses the old token (401). The open
/// watch was authenticated when it began, so the relay cuts it, as a
/// network blip would, and kubexit must ask again: refused, until the
/// client reads the token file again (once its copy is 50 s old), and the
/// new token is accepted. Slow by nature: about a minute.
#[test]
fn a_rotated_token_is_read_again() {
    let Some(Waiting {
        scene,
        relay,
        account,
        yard,
    }) = Waiting::new("a_rotated_token_is_read_again")
    else {
        return;
    };
    let running = waiting(&mut client(&yard, &account, &scene.namespace), &relay);
    let old = relay.exchanges()[0].token.clone();
    let (_, new) = scene.token();
    account.rotate(&new);
    scene.delete_secret(&account.secret);
    // The server remembers a token it accepted for 10 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scene.status_with(&old) != 401 {
        assert!(Instant::now() < deadline, "the old token is still accepted");
        thread::sleep(Duration::from_millis(200));
    }
    relay.cut();
    running.wait_for_log("Warning: 401 Unauthorized");
    scene.set_status(&[("server", READY), ("client", NOT_READY)], &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.stdout().contains("started") {
        assert!(
            Instant::now() < deadline,
            "the rotated token was never used: {:#?}\n{}",
            relay.exchanges(),
            running.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let run = running.finish();
    assert_eq!(
        run.stderr.matches("Warning: 401 Unauthorized").count(),
        1,
        "said once, then retried quietly:\n{}",
        run.stderr
    );
    assert_contains(&run.stderr, "the Kubernetes API answers again");
    assert_started(run);
    let exchanges = relay.exchanges();
    let refused = exchanges.iter().filter(|e| e.status == Some(401));
    assert!(refused.clone().count() >= 1 && refused.clone().all(|e| e.token == old));
    let last = exchanges.last().expect("exchanges");
    assert!(
        last.status == Some(200) && last.token == new,
        "{exchanges:#?}"
    );
}

#[test]
fn an_unreachable_api_server_is_said_and_retried() {
    let yard = Yard::new();
    // A service account mount whose CA signs a server that is not there.
    let account = tempfile::tempdir().unwrap();
    loopback_tls::server_config(account.path());
    fs::write(account.path().join("token"), "token").unwrap();
    fs::write(account.path().join("namespace"), "batch").unwrap();
    // Nothing listens on this port.
    let run = Kubexit::named("client", &yard)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", util::free_port().to_string())
        .env("KUBEXIT_SERVICE_ACCOUNT_DIR", account.path())
        .env("KUBEXIT_POD_NAME", POD)
        .env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_BIRTH_TIMEOUT", "2s")
        .sh("echo started")
        .run();
    assert_never_started(&run, &yard, 1);
    assert_eq!(
        run.stderr
            .matches("Warning: cannot reach the Kubernetes API at https://127.0.0.1:")
            .count(),
        1,
        "said once when it happens, not at every retry:\n{}",
        run.stderr
    );
    assert_contains(
        &run.stderr,
        "not ready after 2s: server (pod not seen yet); last Kubernetes API error: \
             cannot reach the Kubernetes API",
    );
    // kubexit says it in its own words; the client library's own error
    // events stay out of the log at the default level.
    assert_lacks(&run.stderr, "failed with error");
}

#[test]
fn outside_a_cluster_exits_1_at_once() {
    let yard = Yard::new();
    // A long timeout: the harness's deadline fails the test if kubexit
    // waited for it.
    let run = kubexit()
        .env("KUBEXIT_NAME", "client")
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .env("KUBEXIT_POD_NAME", POD)
        .env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .run();
    assert_never_started(&run, &yard, 1);
    assert_contains(
        &run.stderr,
        "KUBEXIT_POD_NAME is set, but kubexit is not running in a Kubernetes cluster",
    );
}

// On the fake server: what the real one cannot be made to show on demand.

/// A kubexit named `client` waiting for `server`, in API mode against the
/// fake server.
fn fake_client(yard: &Yard, api: &ApiServer) -> Kubexit {
    let mut k = Kubexit::named("client", yard);
    api.configure(&mut k);
    k.env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_NAMESPACE", fake_apiserver::NAMESPACE)
        .env("KUBEXIT_BIRTH_TIMEOUT", "10m")
        .sh("echo started");
    k
}

fn wait_for_watches(api: &ApiServer, count: usize) {
    eventually("a watch of the pod", || api.watches() >= count);
}

/// On the fake: the real server ends a watch cleanly only at its timeout
/// (kubexit asks for 290 s), which a test cannot hasten.
#[test]
fn a_watch_the_server_ends_is_resumed_from_the_last_version() {
    use fake_apiserver::pod;
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", Container::Waiting)])));
    let running = fake_client(&yard, &api).spawn();
    wait_for_watches(&api, 1);
    api.update(pod(&[("server", NOT_READY)]));
    running.wait_for_log("server (running, not ready)");
    api.end_watches();
    wait_for_watches(&api, 2);
    api.update(pod(&[("server", READY)]));
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

/// On the fake: the real server keeps far more history than a test can
/// outrun, so it answers `410 Gone` only to versions from long ago.
#[test]
fn gone_410_means_listing_again() {
    use fake_apiserver::pod;
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)])));
    let running = fake_client(&yard, &api)
        .env("KUBEXIT_LOG_LEVEL", "debug")
        .spawn();
    wait_for_watches(&api, 1);
    // The change is only visible to a new list: a client that resumed the
    // watch instead would never see it.
    api.expire_with(pod(&[("server", READY)]));
    let run = running.finish();
    assert_contains(&run.stderr, "410 Gone");
    assert_started(run);
    assert_eq!(api.lists(), 2, "{:?}", api.requests());
}

/// On the fake: the real server answers a list in a namespace that does
/// not exist with an empty list (see
/// `a_pod_that_does_not_exist_is_said_and_named_by_the_timeout`), never
/// 404; a server in front of it may.
#[test]
fn not_found_404_is_said_clearly() {
    use fake_apiserver::pod;
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY)])));
    api.refuse(404);
    let run = fake_client(&yard, &api)
        .env("KUBEXIT_BIRTH_TIMEOUT", "1s")
        .run();
    assert_never_started(&run, &yard, 1);
    assert_contains(
        &run.stderr,
        "pod batch/job-abc was not found (404: namespaces \"batch\" not found); \
             check KUBEXIT_POD_NAME and KUBEXIT_NAMESPACE",
    );
}

/// On the fake: `k8s/up` binds the real server to 127.0.0.1 (its readiness
/// check and URL need it there), and its certificate names no `::1`.
#[test]
fn an_ipv6_api_server_address_works() {
    use fake_apiserver::pod;
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("this test needs IPv6 loopback (::1)");
    }
    let yard = Yard::new();
    let api = ApiServer::start_on("::1", Some(pod(&[("server", READY)])));
    let run = fake_client(&yard, &api).run();
    assert_contains(&run.stderr, "Watching pod batch/job-abc at https://[::1]:");
    assert_started(run);
}
