//! `kubexit webhook`, through the built binary, over real TLS on loopback
//! with certificates made by `deploy/webhook/self-signed.sh`: its answers
//! (the same pod and the same errors as `kubexit inject`), certificate
//! files changed under it, the stop, slow and huge clients, the log, and
//! bad input. The real API server's side is in `webhook_kubernetes.rs`.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kubexit::inject::manifest;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use webhook::{
    Client, IstioAdditions, Pki, Webhook, answer, client_config, head, istio_app_pod, patched,
    review_of, review_with, server_read_everything,
};

use crate::util::{
    self, assert_contains, eventually,
    files::{fixtures, root},
    kubexit, webhook,
};

/// The Pod of the sidecar Job fixture: two main containers and a proxy,
/// and `kubexit.io/sidecars: proxy`.
fn sidecar_pod() -> Value {
    let text = fs::read_to_string(fixtures("inject").join("sidecar-job.yaml")).unwrap();
    let job = manifest::parse(&text, "sidecar-job.yaml")
        .unwrap()
        .remove(0);
    let template = &job["spec"]["template"];
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "report-x7k2p", "namespace": "team", "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    })
}

/// What `kubexit inject -o json` writes for `pod`, or its error output.
fn kubexit_inject(pod: &Value, extra: &[&str]) -> Result<Value, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod.json");
    fs::write(&path, pod.to_string()).unwrap();
    let done = kubexit()
        .args(["inject", "-o", "json"])
        .args(extra)
        .arg_path(&path)
        .run();
    if done.code() == 0 {
        Ok(serde_json::from_str(&done.stdout).unwrap())
    } else {
        Err(done.stderr)
    }
}

#[test]
fn a_pod_that_asks_for_kubexit_comes_back_as_kubexit_inject_writes_it() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let pod = sidecar_pod();
    let answered = answer(&server.client(&pki).review(&review_of(&pod)));
    assert!(answered.allowed);
    assert_eq!(answered.uid, "0b1f2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
    let patch = answered.patch.expect("a patch");
    let injected = kubexit_inject(&pod, &[]).unwrap();
    assert_eq!(patched(&pod, &patch), injected);
    server
        .process
        .wait_for_log("Pod team/report-x7k2p: injected into extract, load, proxy");
}

#[test]
fn the_image_flag_is_the_default_that_a_pods_own_annotation_overrides() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &["--image", "registry.example/kubexit:test"]);
    let mut client = server.client(&pki);
    let pod = sidecar_pod();
    let patch = answer(&client.review(&review_of(&pod))).patch.unwrap();
    let injected = patched(&pod, &patch);
    assert_eq!(
        injected["spec"]["initContainers"][0]["image"],
        "registry.example/kubexit:test"
    );
    // Unlike kubexit inject's --image, it sets no annotation: a default.
    assert!(
        injected["metadata"]["annotations"]
            .get("kubexit.io/image")
            .is_none()
    );

    let mut own = sidecar_pod();
    own["metadata"]["annotations"]["kubexit.io/image"] = json!("mirror.example/kubexit:1");
    let patch = answer(&client.review(&review_of(&own))).patch.unwrap();
    assert_eq!(
        patched(&own, &patch)["spec"]["initContainers"][0]["image"],
        "mirror.example/kubexit:1"
    );
}

#[test]
fn the_patch_adds_and_never_rewrites_what_the_user_wrote() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let answered = answer(&server.client(&pki).review(&review_of(&sidecar_pod())));
    let patch = answered.patch.expect("a patch");
    let operations = patch.as_array().unwrap();
    assert!(
        operations.iter().all(|op| op["op"] == "add"),
        "only adds: {patch:#}"
    );
    let paths: Vec<&str> = operations
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    // Each wrapped command gains its first word, and nothing else of it moves.
    for container in 0..3 {
        assert!(
            paths.contains(&format!("/spec/containers/{container}/command/0").as_str()),
            "{paths:?}"
        );
    }
    assert!(paths.contains(&"/metadata/annotations/kubexit.io~1injected"));
}

#[test]
fn a_pod_without_kubexit_annotations_is_allowed_without_a_patch() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &["--log-level", "debug"]);
    let mut pod = sidecar_pod();
    pod["metadata"]["annotations"] = json!({"team.example/owner": "data"});
    let answered = answer(&server.client(&pki).review(&review_of(&pod)));
    assert!(answered.allowed);
    assert!(answered.patch.is_none());
    server
        .process
        .wait_for_log("Pod team/report-x7k2p: passed through (no kubexit.io/ annotation)");
}

#[test]
fn an_injected_or_disabled_pod_passes_through_without_a_patch() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut client = server.client(&pki);

    // Made with kubexit inject: the webhook leaves it as it is.
    let injected = kubexit_inject(&sidecar_pod(), &[]).unwrap();
    let answered = answer(&client.review(&review_of(&injected)));
    assert!(answered.allowed);
    assert!(answered.patch.is_none());

    // Its own answer, applied and seen again (a reinvocation): the same.
    let pod = sidecar_pod();
    let first = answer(&client.review(&review_of(&pod)));
    let once = patched(&pod, &first.patch.unwrap());
    assert!(answer(&client.review(&review_of(&once))).patch.is_none());

    // Its record spoilt, so that it cannot be injected again: let through
    // as it stands, not refused.
    let mut spoilt = injected.clone();
    spoilt["metadata"]["annotations"]["kubexit.io/injected"] = json!("{\"containers\": 1}");
    let answered = answer(&client.review(&review_of(&spoilt)));
    assert!(answered.allowed, "{}", answered.message);
    assert!(answered.patch.is_none());

    // Injected with another image than the webhook's own: it keeps it.
    let elsewhere = Webhook::with(&pki, &["--image", "registry.example/kubexit:other"]);
    let answered = answer(&elsewhere.client(&pki).review(&review_of(&injected)));
    assert!(answered.allowed);
    assert!(answered.patch.is_none());

    let mut disabled = sidecar_pod();
    disabled["metadata"]["annotations"]["kubexit.io/inject"] = json!("disabled");
    let answered = answer(&client.review(&review_of(&disabled)));
    assert!(answered.allowed);
    assert!(answered.patch.is_none());
    server
        .process
        .wait_for_log("passed through (kubexit.io/inject: disabled)");
    server
        .process
        .wait_for_log("passed through (already injected (kubexit.io/injected))");
}

/// Mutating webhooks run in name order, so a mesh's injector may add its
/// proxy before kubexit's webhook sees the pod or after (the API server
/// then sends it again, under `reinvocationPolicy: IfNeeded`). Here with
/// Istio's additions as its golden output has them: kubexit's second
/// answer touches only the main container and its record, and both orders
/// give the pod `kubexit inject` makes of Istio's output, which passes
/// through when seen again. (Against the real API server, with both
/// webhooks registered: `webhook_kubernetes.rs`.)
#[test]
fn a_meshs_proxy_added_before_or_after_kubexits_answer_gives_the_same_pod() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut client = server.client(&pki);
    let istio = IstioAdditions::from_golden();
    let app = istio_app_pod();

    // kubexit's webhook first, then the mesh's, then kubexit's again.
    let first = answer(&client.review(&review_of(&app)));
    let injected = patched(&app, &first.patch.expect("the app injected"));
    let proxied = patched(&injected, &istio.patch(&injected).unwrap());
    let again = answer(&client.review(&review_of(&proxied)));
    let patch = again.patch.expect("a patch for the proxy added since");
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        assert!(
            path.starts_with("/spec/containers/0/") || path.starts_with("/metadata/annotations/"),
            "the patch reaches beyond the main container and the record: {op}"
        );
    }
    let kubexit_first = patched(&proxied, &patch);

    // The mesh's first, then kubexit's.
    let meshed = patched(&app, &istio.patch(&app).unwrap());
    let answered = answer(&client.review(&review_of(&meshed)));
    let mesh_first = patched(&meshed, &answered.patch.expect("the meshed app injected"));

    assert_eq!(kubexit_first, mesh_first);
    assert_eq!(kubexit_inject(&meshed, &[]).unwrap(), mesh_first);
    let quit = json!({"name": "KUBEXIT_QUIT", "value": "istio"});
    let env = mesh_first["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env.contains(&quit), "{mesh_first:#}");
    assert!(
        answer(&client.review(&review_of(&mesh_first)))
            .patch
            .is_none()
    );
}

#[test]
fn invalid_annotations_are_denied_with_the_message_kubexit_inject_gives() {
    let pki = Pki::new();
    // Neither reads images from registries: a container without command
    // is refused alike.
    let server = Webhook::with(&pki, &["--registry-lookup", "off"]);
    let mut client = server.client(&pki);

    let mut misspelt = sidecar_pod();
    misspelt["metadata"]["annotations"] = json!({"kubexit.io/sidecar": "proxy"});
    let mut no_command = sidecar_pod();
    no_command["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let mut not_a_container = sidecar_pod();
    not_a_container["metadata"]["annotations"] = json!({"kubexit.io/sidecars": "proxi"});

    for pod in [misspelt, no_command, not_a_container] {
        let answered = answer(&client.review(&review_of(&pod)));
        assert!(!answered.allowed, "{pod}");
        assert!(answered.patch.is_none());
        let said = kubexit_inject(&pod, &["--offline"]).expect_err("kubexit inject refuses it too");
        // kubexit inject names the file and the object first; the API
        // server names the object itself.
        assert!(
            said.contains(&format!("Pod report-x7k2p: {}\n", answered.message)),
            "the webhook says {:?}; kubexit inject says {said:?}",
            answered.message
        );
        server.process.wait_for_log(&format!(
            "Pod team/report-x7k2p: denied: {}",
            answered.message
        ));
    }
}

#[test]
fn anything_but_the_creation_of_a_pod_is_allowed_unchanged() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &["--log-level", "debug"]);
    let mut client = server.client(&pki);
    let pod = sidecar_pod();

    let update = review_with(
        &pod,
        "UPDATE",
        json!({"group": "", "version": "v1", "kind": "Pod"}),
    );
    let deployment = review_with(
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}),
        "CREATE",
        json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
    );
    for review in [update, deployment] {
        let answered = answer(&client.review(&review));
        assert!(answered.allowed);
        assert!(answered.patch.is_none());
    }

    // A pod kubexit's types cannot read (a name that is a number): allowed,
    // with its uid, and said.
    let mut odd = review_of(&pod);
    odd["request"]["object"]["metadata"]["name"] = json!(42);
    let answered = answer(&client.review(&odd));
    assert!(answered.allowed);
    assert!(answered.patch.is_none());
    assert_eq!(answered.uid, "0b1f2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
    server
        .process
        .wait_for_log("Warning: Pod: allowed unchanged: cannot read the review");
}

#[test]
fn what_is_not_a_review_gets_400_and_the_server_goes_on() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut client = server.client(&pki);
    for body in [&b"{not json"[..], b"{\"kind\": \"AdmissionReview\"}", b"[]"] {
        let response = client.request("POST", "/inject", body).unwrap();
        assert_eq!(response.status, 400, "{}", response.text());
        assert_contains(&response.text(), "not an AdmissionReview");
    }
    // The same connection still serves.
    let answered = answer(&client.review(&review_of(&sidecar_pod())));
    assert!(answered.patch.is_some());
    server
        .process
        .wait_for_log("Warning: Refused a request from 127.0.0.1:");
}

#[test]
fn health_and_readiness_answer_and_other_paths_do_not() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut client = server.client(&pki);
    for path in ["/healthz", "/readyz"] {
        let response = client.request("GET", path, b"").unwrap();
        assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
        let response = client.request("POST", path, b"").unwrap();
        assert_eq!(response.status, 405);
        assert_eq!(response.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(client.request("GET", "/inject", b"").unwrap().status, 405);
    assert_eq!(client.request("GET", "/debug", b"").unwrap().status, 404);
    assert_eq!(client.request("POST", "/metrics", b"").unwrap().status, 405);
}

/// Posts reviews from `threads` clients, each on new connections and on a
/// kept one, until `stop`; counts answers and failures, and records every
/// certificate served.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<Vec<u8>>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, cas: &[&Path], threads: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            answered: Arc::new(AtomicUsize::new(0)),
            failures: Arc::new(Mutex::new(Vec::new())),
            served: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        let config = client_config(cas);
        let review = review_of(&sidecar_pod()).to_string();
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (stop, answered, failures, served) = (
                Arc::clone(&load.stop),
                Arc::clone(&load.answered),
                Arc::clone(&load.failures),
                Arc::clone(&load.served),
            );
            let (config, review) = (Arc::clone(&config), review.clone());
            handles.push(thread::spawn(move || {
                let mut kept: Option<Client> = None;
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    // Every other request on a fresh connection: a fresh
                    // handshake, with whatever certificate is served now.
                    if round.is_multiple_of(2) || kept.is_none() {
                        match Client::try_connect(port, Arc::clone(&config)) {
                            Ok(client) => {
                                served.lock().unwrap().push(client.served());
                                kept = Some(client);
                            }
                            Err(e) => {
                                failures.lock().unwrap().push(format!("connect: {e}"));
                                continue;
                            }
                        }
                    }
                    let client = kept.as_mut().unwrap();
                    match client.request("POST", "/inject", review.as_bytes()) {
                        Ok(r) if r.status == 200 && answer(&r.json()).patch.is_some() => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", r.status, r.text()))
                        }
                        Err(e) => failures.lock().unwrap().push(format!("request: {e}")),
                    }
                }
            }));
        }
        Load {
            threads: handles,
            ..load
        }
    }

    fn wait_for_answers(&self, more: usize) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more answers"), || {
            self.answered.load(Ordering::Relaxed) >= target
        });
    }

    fn wait_until_served(&self, cert: &[u8]) {
        eventually("the new certificate to be served", || {
            self.served.lock().unwrap().iter().any(|c| c == cert)
        });
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads {
            handle.join().unwrap();
        }
        self.failures.lock().unwrap().clone()
    }
}

/// The files of a Secret volume as the kubelet writes them: `tls.crt` and
/// `tls.key` are links through `..data` to a directory of the current
/// version, and an update swaps `..data` in one rename.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: u32,
}

impl SecretVolume {
    fn new(pki: &Pki) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        volume.update(pki);
        symlink("..data/tls.crt", volume.dir.path().join("tls.crt")).unwrap();
        symlink("..data/tls.key", volume.dir.path().join("tls.key")).unwrap();
        volume
    }

    fn update(&mut self, pki: &Pki) {
        self.version += 1;
        let version = format!("..2026_11_30_{}", self.version);
        let dir = self.dir.path().join(&version);
        fs::create_dir(&dir).unwrap();
        fs::copy(&pki.cert, dir.join("tls.crt")).unwrap();
        fs::copy(&pki.key, dir.join("tls.key")).unwrap();
        let temp = self.dir.path().join("..data_tmp");
        symlink(&version, &temp).unwrap();
        fs::rename(&temp, self.dir.path().join("..data")).unwrap();
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("tls.key")
    }
}

#[test]
fn a_secret_volume_updated_under_load_is_served_without_a_request_dropped() {
    let (old, new) = (Pki::new(), Pki::new());
    let mut volume = SecretVolume::new(&old);
    let server = Webhook::start(&volume.cert(), &volume.key(), &[]);
    let load = Load::start(server.port, &[&old.ca, &new.ca], 3);
    load.wait_for_answers(20);
    volume.update(&new);
    load.wait_until_served(&new.served());
    load.wait_for_answers(20);
    let failures = load.finish();
    assert!(failures.is_empty(), "dropped: {failures:?}");
    server
        .process
        .wait_for_log("Serving the new certificate of");
    // New handshakes get only the new one from then on.
    for _ in 0..3 {
        assert_eq!(server.client(&new).served(), new.served());
    }
}

#[test]
fn files_rewritten_in_place_are_served_once_the_pair_matches_and_a_bad_pair_is_not() {
    let (old, new) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    fs::copy(&old.cert, &cert).unwrap();
    fs::copy(&old.key, &key).unwrap();
    let server = Webhook::start(&cert, &key, &[]);
    let load = Load::start(server.port, &[&old.ca, &new.ca], 2);
    load.wait_for_answers(10);

    // A key that is not the certificate's: said, and the old pair served on.
    fs::copy(&new.key, &key).unwrap();
    server
        .process
        .wait_for_log("is not the key of the certificate in");
    load.wait_for_answers(10);
    assert_eq!(server.client(&old).served(), old.served());

    // Garbage: the same.
    fs::write(&cert, "not a certificate\n").unwrap();
    server.process.wait_for_log("holds no certificate in PEM");
    load.wait_for_answers(10);
    assert_eq!(server.client(&old).served(), old.served());

    // The matching certificate: served.
    fs::copy(&new.cert, &cert).unwrap();
    load.wait_until_served(&new.served());
    load.wait_for_answers(10);
    let failures = load.finish();
    assert!(failures.is_empty(), "dropped: {failures:?}");
}

#[test]
fn sighup_reads_the_certificate_files_again() {
    let (old, new) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    fs::copy(&old.cert, &cert).unwrap();
    fs::copy(&old.key, &key).unwrap();
    let server = Webhook::start(&cert, &key, &[]);
    server.process.signal(Signal::SIGHUP);
    // Unchanged files: nothing to say, and the server goes on.
    assert_eq!(server.client(&old).served(), old.served());
    assert!(
        !server
            .process
            .stderr()
            .contains("Serving the new certificate")
    );
    fs::copy(&new.cert, &cert).unwrap();
    fs::copy(&new.key, &key).unwrap();
    server.process.signal(Signal::SIGHUP);
    server
        .process
        .wait_for_log("Serving the new certificate of");
    assert_eq!(server.client(&new).served(), new.served());
}

#[test]
fn sigterm_answers_the_review_in_flight_refuses_new_connections_and_exits_zero() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut idle = server.client(&pki);
    assert_eq!(idle.request("GET", "/readyz", b"").unwrap().status, 200);

    // A review half sent: its head and half its body, read by the server.
    let body = review_of(&sidecar_pod()).to_string().into_bytes();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut in_flight = server.client(&pki);
    in_flight
        .send(&head("POST", "/inject", body.len()))
        .unwrap();
    in_flight.send(first).unwrap();
    let port = in_flight.local_port();
    eventually("the server to read the half review", || {
        server_read_everything(server.port, port)
    });

    server.process.signal(Signal::SIGTERM);
    server.process.wait_for_log("Stopping: no new connections");
    // No new connection: the port is closed.
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).is_err());
    // The idle keep-alive connection is closed at once.
    eventually("the idle connection to be closed", || {
        idle.closed_by_server()
    });

    in_flight.send(rest).unwrap();
    let response = in_flight
        .response()
        .expect("the review in flight is answered");
    assert_eq!(response.status, 200);
    assert!(answer(&response.json()).patch.is_some());

    let done = server.process.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "Stopped: every review answered");
}

#[test]
fn the_shutdown_delay_fails_readiness_first_and_keeps_answering() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &["--shutdown-delay", "1h"]);
    let mut client = server.client(&pki);
    server.process.signal(Signal::SIGTERM);
    server.process.wait_for_log("/readyz fails from now on");
    let response = client.request("GET", "/readyz", b"").unwrap();
    assert_eq!(
        (response.status, response.text().as_str()),
        (503, "stopping\n")
    );
    assert_eq!(client.request("GET", "/healthz", b"").unwrap().status, 200);
    // New connections are still accepted and answered.
    assert!(
        answer(&server.client(&pki).review(&review_of(&sidecar_pod())))
            .patch
            .is_some()
    );
    // A second signal cuts the delay short.
    server.process.signal(Signal::SIGTERM);
    let done = server.process.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
}

#[test]
fn a_slow_client_is_cut_off_and_does_not_keep_others_waiting() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &["--request-timeout", "1s", "--max-connections", "3"]);
    // Three clients take every connection the server allows: two trickle a
    // request head a byte at a time, one never finishes its TLS handshake.
    let mut slow: Vec<Client> = (0..2).map(|_| server.client(&pki)).collect();
    let silent = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
    let trickling = Arc::new(AtomicBool::new(true));
    let head = head("POST", "/inject", 10);
    let cut_off: Vec<thread::JoinHandle<bool>> = slow
        .drain(..)
        .map(|mut client| {
            let (trickling, head) = (Arc::clone(&trickling), head.clone());
            thread::spawn(move || {
                for byte in head.iter().cycle() {
                    if !trickling.load(Ordering::Relaxed) {
                        return false;
                    }
                    if client.send(&[*byte]).is_err() || client.closed_by_server() {
                        return true;
                    }
                }
                false
            })
        })
        .collect();

    // A fourth client is answered, once the slow ones have been cut off.
    let answered = answer(&server.client(&pki).review(&review_of(&sidecar_pod())));
    assert!(answered.patch.is_some());
    for handle in cut_off {
        assert!(handle.join().unwrap(), "a slow client was not cut off");
    }
    trickling.store(false, Ordering::Relaxed);
    let mut silent = silent;
    silent.set_read_timeout(Some(util::DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(std::io::Read::read(&mut silent, &mut byte), Ok(0) | Err(_)),
        "the silent connection was not closed"
    );
    server
        .process
        .wait_for_log("its request was not complete within 1s (--request-timeout)");
    server
        .process
        .wait_for_log("no TLS handshake within 1s (--request-timeout)");
}

#[test]
fn a_huge_body_is_refused_before_it_is_read() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let before = server.peak_rss_kib();

    // A gigabyte announced: refused at once, the connection closed.
    let mut client = server.client(&pki);
    client.send(&head("POST", "/inject", 1 << 30)).unwrap();
    let response = client.response().unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(response.text().contains("over the limit of 3145728 bytes"));
    // And sent anyway: the server reads none of it.
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0usize;
    while sent < 256 << 20 && client.send(&chunk).is_ok() {
        sent += chunk.len();
    }
    assert!(sent < 256 << 20, "the server went on reading {sent} bytes");

    // No length: refused too, before any body.
    let mut client = server.client(&pki);
    client
        .send(b"POST /inject HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    assert_eq!(client.response().unwrap().status, 411);

    // Within the limit, a body is read whole: 2 MiB of nothing is no review.
    let mut client = server.client(&pki);
    let response = client
        .request("POST", "/inject", &vec![b' '; 2 << 20])
        .unwrap();
    assert_eq!(response.status, 400);

    server
        .process
        .wait_for_log("over the limit of 3145728 (--max-request-bytes)");
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the peak resident set grew by {grown} KiB"
    );
}

#[test]
fn many_large_bodies_at_once_wait_for_their_share_of_memory() {
    let pki = Pki::new();
    // A long deadline: this is about memory, and sixteen bodies of 2 MiB
    // through TLS take a while on a loaded machine.
    let server = Webhook::with(
        &pki,
        &["--max-request-bytes", "2Mi", "--request-timeout", "2m"],
    );
    // Sixteen reviews of 2 MiB each (a real review, padded with white
    // space), sent at once: 32 MiB of bodies against a budget of 8.
    let mut review = review_of(&sidecar_pod()).to_string().into_bytes();
    review.resize(2 << 20, b' ');
    let review = Arc::new(review);
    let clients: Vec<thread::JoinHandle<u16>> = (0..16)
        .map(|_| {
            let (port, ca, review) = (server.port, pki.ca.clone(), Arc::clone(&review));
            thread::spawn(move || {
                let mut client = Client::connect(port, &[&ca]);
                let response = client.request("POST", "/inject", &review).unwrap();
                if response.status == 200 {
                    assert!(answer(&response.json()).patch.is_some());
                }
                response.status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    // Without the budget the bodies alone (each collected, then copied
    // whole) would have taken 64 MiB at once.
    let peak = server.peak_rss_kib();
    assert!(peak < 40 * 1024, "peak resident set {peak} KiB");
}

#[test]
fn the_log_is_json_when_asked() {
    let pki = Pki::new();
    let port = util::free_port();
    let mut command = kubexit();
    command
        .env("KUBEXIT_LOG_FORMAT", "json")
        .args(["webhook", "--tls-cert"])
        .arg_path(&pki.cert)
        .args(["--tls-key"])
        .arg_path(&pki.key)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let process = command.spawn();
    process.wait_for_log("Serving admission reviews");
    let mut client = Client::connect(port, &[&pki.ca]);
    client.review(&review_of(&sidecar_pod()));
    process.wait_for_log("injected into");
    process.signal(Signal::SIGTERM);
    let done = process.finish();
    assert_eq!(done.code(), 0);
    let lines: Vec<Value> = done
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["name"] == "webhook" && l["time"].is_string())
    );
    let injected = lines
        .iter()
        .find(|l| l["outcome"] == "injected")
        .expect("a line for the review");
    assert_eq!(injected["level"], "info");
    assert_eq!(injected["uid"], "0b1f2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
    assert_eq!(
        injected["message"],
        "Pod team/report-x7k2p: injected into extract, load, proxy"
    );
}

#[test]
fn bad_flags_and_certificate_files_are_refused_with_the_fix_and_exit_2() {
    let (pki, other) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "hello\n").unwrap();
    let missing = dir.path().join("missing.crt");
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--tls-cert", missing.to_str().unwrap(), "--tls-key", key],
            format!("cannot read {}", missing.display()),
        ),
        (
            vec!["--tls-cert", garbage.to_str().unwrap(), "--tls-key", key],
            "holds no certificate in PEM".into(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", garbage.to_str().unwrap()],
            "holds no private key in PEM".into(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
            "is not the key of the certificate in".into(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--listen", "8443"],
            "--listen \"8443\": not an address and port".into(),
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--request-timeout",
                "10",
            ],
            "--request-timeout: \"10\": a duration needs a unit".into(),
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--max-request-bytes",
                "3MB",
            ],
            "--max-request-bytes \"3MB\": write a positive number of bytes".into(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--image", ""],
            "--image".into(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--log-format", "yaml"],
            "KUBEXIT_LOG_FORMAT (--log-format)".into(),
        ),
        (vec!["--tls-key", key], "--tls-cert <FILE>".into()),
    ];
    for (args, said) in cases {
        let done = kubexit().arg_path(Path::new("webhook")).args(&args).run();
        assert_eq!(done.code(), 2, "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains(&said), "{args:?}: {}", done.stderr);
    }
}

#[test]
fn an_address_in_use_exits_1_naming_it() {
    let pki = Pki::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let done = kubexit()
        .args(["webhook", "--tls-cert"])
        .arg_path(&pki.cert)
        .args(["--tls-key"])
        .arg_path(&pki.key)
        .args(["--listen", &address])
        .run();
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert_contains(&done.stderr, &format!("cannot listen on {address}: "));
}

#[test]
fn help_names_every_flag_and_exits_0() {
    let done = kubexit().args(["webhook", "--help"]).run();
    assert_eq!(done.code(), 0);
    for flag in [
        "--tls-cert",
        "--tls-key",
        "--listen",
        "--image",
        "--max-request-bytes",
        "--request-timeout",
        "--idle-timeout",
        "--max-connections",
        "--shutdown-delay",
        "--registry-lookup",
        "--registry-timeout",
        "--registry-auth-file",
        "--insecure-registries",
        "--log-format",
    ] {
        assert!(done.stdout.contains(flag), "{flag}: {}", done.stdout);
    }
}

/// Every `kubexit webhook` line of the docs and of the deployment
/// manifests parses: each flag exists and each value is accepted (clap
/// stops at `--help`, after reading what comes before it).
#[test]
fn every_kubexit_webhook_command_line_in_the_docs_and_manifests_parses() {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for page in ["README.md", "docs/webhook.md"] {
        let text = fs::read_to_string(root().join(page)).unwrap();
        for line in text.lines() {
            let Some(at) = line.find("kubexit webhook") else {
                continue;
            };
            let rest = &line[at + "kubexit webhook".len()..];
            let rest = rest.split(['`', '|', '#']).next().unwrap_or_default();
            let words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            lines.push((format!("{page}: {line}"), words));
        }
    }
    let deployment = fs::read_to_string(root().join("deploy/webhook/webhook.yaml")).unwrap();
    let objects = manifest::parse(&deployment, "webhook.yaml").unwrap();
    let container = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .map(|d| &d["spec"]["template"]["spec"]["containers"][0])
        .expect("the Deployment");
    assert_eq!(container["command"], json!(["/bin/kubexit", "webhook"]));
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    lines.push(("deploy/webhook/webhook.yaml".into(), args));
    assert!(lines.len() >= 4, "only {} command lines found", lines.len());
    for (origin, mut words) in lines {
        words.push("--help".into());
        let done = kubexit().arg_path(Path::new("webhook")).args(&words).run();
        assert_eq!(done.code(), 0, "{origin}: {}", done.stderr);
    }
}

#[test]
fn a_pod_of_two_hundred_containers_comes_back_whole() {
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let mut pod = sidecar_pod();
    let containers: Vec<Value> = (0..200)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox", "command": ["sleep", "1"]}))
        .collect();
    pod["spec"]["containers"] = json!(containers);
    pod["metadata"]["annotations"] = json!({"kubexit.io/inject": "enabled"});
    let answered = answer(&server.client(&pki).review(&review_of(&pod)));
    let injected = patched(&pod, &answered.patch.unwrap());
    assert_eq!(injected, kubexit_inject(&pod, &[]).unwrap());
    assert_eq!(
        injected["spec"]["containers"][199]["command"],
        json!(["/kubexit/kubexit", "sleep", "1"])
    );
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_said_in_the_log_and_a_port_check_is_not() {
    let (pki, stranger) = (Pki::new(), Pki::new());
    let server = Webhook::with(&pki, &[]);
    // A port check: connect, close.
    drop(TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap());
    // A client with another CA (a caBundle that is not this certificate's).
    assert!(Client::try_connect(server.port, client_config(&[&stranger.ca])).is_err());
    server
        .process
        .wait_for_log("is the webhook configuration's caBundle the CA of --tls-cert?");
    // Still serving, and only the real fault was said.
    assert!(answer(&server.client(&pki).review(&review_of(&sidecar_pod()))).allowed);
    let warnings = server.process.stderr().matches("Warning:").count();
    assert_eq!(warnings, 1, "{}", server.process.stderr());
}

#[test]
fn metrics_count_reviews_by_outcome_refusals_and_certificate_reloads() {
    let (old, new) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    fs::copy(&old.cert, &cert).unwrap();
    fs::copy(&old.key, &key).unwrap();
    let server = Webhook::start(&cert, &key, &[]);
    let mut client = Client::connect(server.port, &[&old.ca, &new.ca]);

    client.review(&review_of(&sidecar_pod()));
    let mut plain = sidecar_pod();
    plain["metadata"]["annotations"] = json!({});
    client.review(&review_of(&plain));
    client.review(&review_of(&plain));
    let mut misspelt = sidecar_pod();
    misspelt["metadata"]["annotations"] = json!({"kubexit.io/sidecar": "proxy"});
    client.review(&review_of(&misspelt));
    assert_eq!(client.request("POST", "/inject", b"{").unwrap().status, 400);
    fs::copy(&new.cert, &cert).unwrap();
    fs::copy(&new.key, &key).unwrap();
    server
        .process
        .wait_for_log("Serving the new certificate of");

    let response = client.request("GET", "/metrics", b"").unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let text = response.text();
    for line in [
        "kubexit_webhook_reviews_total{outcome=\"injected\"} 1",
        "kubexit_webhook_reviews_total{outcome=\"denied\"} 1",
        "kubexit_webhook_reviews_total{outcome=\"unchanged\"} 2",
        "kubexit_webhook_reviews_total{outcome=\"fault\"} 0",
        "kubexit_webhook_refused_total 1",
        "kubexit_webhook_certificate_reloads_total{result=\"served\"} 1",
        "kubexit_webhook_open_connections 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
}

/// A pod Linkerd's injector has been through, its proxy a regular container
/// whose shutdown endpoint is off: the webhook coordinates it as `kubexit
/// inject` does and says in its admission warnings what `kubexit inject`
/// says on standard error.
#[test]
fn a_linkerd_proxy_that_will_refuse_the_quit_is_said_in_the_admission_warnings() {
    let text = fs::read_to_string(fixtures("meshes").join("linkerd-pod.golden.yml")).unwrap();
    let mut pod = manifest::parse(&text, "linkerd-pod.golden.yml")
        .unwrap()
        .remove(0);
    pod["spec"]["restartPolicy"] = json!("Never");
    pod["metadata"]["annotations"]["kubexit.io/inject"] = json!("enabled");
    let pki = Pki::new();
    let server = Webhook::with(&pki, &[]);
    let review = server.client(&pki).review(&review_of(&pod));
    let warnings = review["response"]["warnings"].to_string();
    assert_contains(
        &warnings,
        "container linkerd-proxy: Linkerd's proxy serves its shutdown endpoint only with \
         LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true",
    );
    let patch = answer(&review).patch.expect("a patch");
    assert_eq!(patched(&pod, &patch), kubexit_inject(&pod, &[]).unwrap());
}
