//! `kubexit webhook` registered with the real Kubernetes API server
//! (`../shared/peers/k8s`, through `util/k8s.rs`), at a loopback URL with
//! the caBundle that `deploy/webhook/self-signed.sh` makes: pods created in
//! an enabled namespace read back injected, pods elsewhere do not, bad
//! annotations are denied with kubexit inject's message, and with the
//! webhook stopped the failure policy decides; beside a mesh's injector
//! (a webhook of the test's own that adds Istio's proxy as Istio's golden
//! output has it), before or after kubexit's, the pod comes out the same.
//! The deployment manifests of `deploy/webhook/` are judged by server-side
//! dry runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s::Cluster;
use kubexit::inject::{self, Options, manifest};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use webhook::{IstioAdditions, eventually_slow, istio_app_pod};

use crate::util::{
    Running,
    files::{fixtures, root},
    free_port, k8s, kubexit, loopback_tls, webhook,
};

/// What `deploy/webhook/self-signed.sh --ip 127.0.0.1` makes: the files,
/// and the Secret and MutatingWebhookConfiguration it writes.
struct SelfSigned {
    dir: tempfile::TempDir,
    objects: Vec<Value>,
}

impl SelfSigned {
    fn make(extra: &[&str]) -> SelfSigned {
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new(root().join("deploy/webhook/self-signed.sh"))
            .args(["--ip", "127.0.0.1", "--out"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let objects = manifest::parse(&String::from_utf8(made.stdout).unwrap(), "self-signed.sh")
            .expect("self-signed.sh writes YAML");
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Secret", "MutatingWebhookConfiguration"]);
        SelfSigned { dir, objects }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn configuration(&self) -> &Value {
        &self.objects[1]
    }
}

/// `kubexit webhook` as the Deployment of `deploy/webhook/webhook.yaml`
/// runs it (its arguments and variables), with the certificate files
/// given, on a loopback port, logging debug lines too.
fn start_as_deployed(certificate: &SelfSigned) -> (Running, u16) {
    let text = fs::read_to_string(root().join("deploy/webhook/webhook.yaml")).unwrap();
    let objects = manifest::parse(&text, "webhook.yaml").unwrap();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let cert = certificate.cert();
    let key = certificate.key();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.strip_prefix(mount) {
                Some("/tls.crt") => cert.display().to_string(),
                Some("/tls.key") => key.display().to_string(),
                _ => a.to_owned(),
            }
        })
        .collect();
    let port = free_port();
    let mut command = kubexit();
    command.arg_path(Path::new("webhook")).args(&args).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log-level",
        "debug",
    ]);
    for variable in container["env"].as_array().into_iter().flatten() {
        command.env(
            variable["name"].as_str().unwrap(),
            variable["value"].as_str().unwrap(),
        );
    }
    let process = command.spawn();
    process.wait_for_log("Serving admission reviews");
    (process, port)
}

/// The script's MutatingWebhookConfiguration, pointed at `port` on
/// loopback, with this failure policy, selecting only the namespaces of
/// this registration (labelled `kubexit.test/run`) among those labelled
/// `kubexit.io/inject=enabled`. Deleted when dropped.
struct Registration<'c> {
    cluster: &'c Cluster,
    name: String,
    /// The labels of a namespace it selects.
    labels: Value,
}

impl<'c> Registration<'c> {
    fn new(cluster: &'c Cluster, certificate: &SelfSigned, port: u16, policy: &str) -> Self {
        let name = k8s::unique("kubexit-test");
        let mut configuration = certificate.configuration().clone();
        configuration["metadata"]["name"] = json!(name);
        let webhook = &mut configuration["webhooks"][0];
        let ca_bundle = webhook["clientConfig"]["caBundle"].clone();
        assert!(ca_bundle.is_string(), "the script gives the caBundle");
        webhook["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{port}/inject"),
            "caBundle": ca_bundle,
        });
        webhook["failurePolicy"] = json!(policy);
        let mut labels = webhook["namespaceSelector"]["matchLabels"].clone();
        assert_eq!(labels, json!({"kubexit.io/inject": "enabled"}));
        labels["kubexit.test/run"] = json!(name);
        webhook["namespaceSelector"]["matchLabels"] = labels.clone();
        let (code, body) = cluster.create("", &configuration, false);
        assert_eq!(code, 201, "register the webhook: {body}");
        Registration {
            cluster,
            name,
            labels,
        }
    }

    /// A namespace this registration selects.
    fn namespace(&self) -> String {
        self.cluster.namespace_labelled("webhook-on", &self.labels)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.cluster.delete(&format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
            self.name
        ));
    }
}

/// A Pod of an application and its proxy, with these annotations.
fn pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", "echo done"]},
                {
                    "name": "proxy",
                    "image": "envoyproxy/envoy:v1.31.0",
                    "command": ["envoy"],
                    "args": ["-c", "/etc/envoy/envoy.yaml"],
                    "readinessProbe": {"tcpSocket": {"port": 15000}},
                },
            ],
        },
    })
}

fn sidecars() -> Value {
    json!({"kubexit.io/sidecars": "proxy"})
}

fn is_injected(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get("kubexit.io/injected")
        .is_some()
}

/// Waits until the API server calls the webhook for `namespace`: a new
/// configuration takes it a moment to load. A dry run asks, storing
/// nothing (the webhook declares no side effects).
fn wait_until_called(cluster: &Cluster, namespace: &str) {
    let probe = pod("probe", sidecars());
    eventually_slow("the API server to call the webhook", || {
        let (code, body) = cluster.create(namespace, &probe, true);
        assert_eq!(code, 201, "dry run: {body}");
        is_injected(&body)
    });
}

fn command_of(pod: &Value, container: usize) -> &Value {
    &pod["spec"]["containers"][container]["command"]
}

#[test]
fn a_pod_created_in_an_enabled_namespace_reads_back_injected_and_elsewhere_untouched() {
    let test = "a_pod_created_in_an_enabled_namespace_reads_back_injected_and_elsewhere_untouched";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let certificate = SelfSigned::make(&[]);
    let (server, port) = start_as_deployed(&certificate);
    let registration = Registration::new(cluster, &certificate, port, "Fail");
    let enabled = registration.namespace();
    let elsewhere = cluster.namespace("webhook-off");
    wait_until_called(cluster, &enabled);

    // In the enabled namespace: stored injected.
    let plain = pod("report", sidecars());
    let (code, body) = cluster.create(&enabled, &plain, false);
    assert_eq!(code, 201, "create: {body}");
    let (code, stored) = cluster.get(&enabled, &plain);
    assert_eq!(code, 200, "read back: {stored}");
    assert!(is_injected(&stored), "{stored:#}");
    let spec = &stored["spec"];
    assert_eq!(spec["initContainers"][0]["name"], "kubexit");
    assert_eq!(
        spec["initContainers"][0]["image"],
        inject::pod::default_image()
    );
    let graveyard = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "graveyard")
        .expect("the graveyard volume");
    assert_eq!(graveyard["emptyDir"]["medium"], "Memory");
    assert_eq!(
        command_of(&stored, 0),
        &json!(["/kubexit/kubexit", "sh", "-c", "echo done"])
    );
    assert_eq!(
        command_of(&stored, 1),
        &json!(["/kubexit/kubexit", "envoy"])
    );
    assert_eq!(
        spec["containers"][1]["args"],
        json!(["-c", "/etc/envoy/envoy.yaml"])
    );
    let env = |container: usize, name: &str| -> Option<String> {
        spec["containers"][container]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(env(0, "KUBEXIT_NAME").as_deref(), Some("app"));
    assert_eq!(env(0, "KUBEXIT_BIRTH_DEPS").as_deref(), Some("proxy"));
    assert_eq!(env(1, "KUBEXIT_DEATH_DEPS").as_deref(), Some("app"));
    assert_eq!(
        env(1, "KUBEXIT_READY_PROBE").as_deref(),
        Some("tcp://127.0.0.1:15000")
    );
    // The record undoes it on what the server stored, defaults and all.
    let back = inject::uninject(&stored).unwrap();
    assert_eq!(command_of(&back, 1), &json!(["envoy"]));
    assert!(!back["spec"].to_string().contains("KUBEXIT_"));
    server.wait_for_log(&format!("Pod {enabled}/report: injected into app, proxy"));

    // A pod a controller would make, its name generated after admission.
    let mut generated = pod("", sidecars());
    generated["metadata"] = json!({"generateName": "report-", "annotations": sidecars()});
    let (code, made) = cluster.create(&enabled, &generated, false);
    assert_eq!(code, 201, "create: {made}");
    assert!(is_injected(&made));
    server.wait_for_log(&format!("Pod {enabled}/report-*: injected into app, proxy"));

    // Without kubexit.io/ annotations: stored as written.
    let (code, unasked) = cluster.create(&enabled, &pod("plain", json!({})), false);
    assert_eq!(code, 201, "create: {unasked}");
    assert!(!is_injected(&unasked));
    assert_eq!(command_of(&unasked, 1), &json!(["envoy"]));
    server.wait_for_log(&format!(
        "Pod {enabled}/plain: passed through (no kubexit.io/ annotation)"
    ));

    // Labelled kubexit.io/inject=disabled: never even sent to the webhook.
    let mut opted_out = pod("opted-out", sidecars());
    opted_out["metadata"]["labels"] = json!({"kubexit.io/inject": "disabled"});
    let (code, stored) = cluster.create(&enabled, &opted_out, false);
    assert_eq!(code, 201, "create: {stored}");
    assert!(!is_injected(&stored));

    // In a namespace without the label: stored as written.
    let (code, untouched) = cluster.create(&elsewhere, &pod("report", sidecars()), false);
    assert_eq!(code, 201, "create: {untouched}");
    assert!(!is_injected(&untouched));
    assert_eq!(command_of(&untouched, 0), &json!(["sh", "-c", "echo done"]));

    let log = server.stderr();
    assert!(
        !log.contains("opted-out"),
        "the webhook saw the opted-out pod: {log}"
    );
    assert!(
        !log.contains(&elsewhere),
        "the webhook saw the other namespace: {log}"
    );
}

#[test]
fn bad_annotations_are_denied_on_creation_with_kubexit_injects_message() {
    let test = "bad_annotations_are_denied_on_creation_with_kubexit_injects_message";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let certificate = SelfSigned::make(&[]);
    // Asking no registry, as kubexit inject --offline (what
    // Options::default() is): the container without command is refused
    // for that, not for a registry this machine cannot reach.
    let server = webhook::Webhook::start(
        &certificate.cert(),
        &certificate.key(),
        &["--registry-lookup", "off"],
    );
    let registration = Registration::new(cluster, &certificate, server.port, "Fail");
    let enabled = registration.namespace();
    wait_until_called(cluster, &enabled);

    let mut no_command = pod("no-command", sidecars());
    no_command["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    for bad in [
        pod("misspelt", json!({"kubexit.io/sidecar": "proxy"})),
        pod("no-such-container", json!({"kubexit.io/sidecars": "proxi"})),
        no_command,
    ] {
        let expected = inject::inject(&bad, &Options::default())
            .expect_err("kubexit inject refuses it")
            .to_string();
        let (code, body) = cluster.create(&enabled, &bad, false);
        // 400 with no reason: kubectl prints "Error from server: error when
        // creating ...: admission webhook ... denied the request: MESSAGE".
        assert_eq!(code, 400, "{body}");
        assert!(body.get("reason").is_none(), "{body}");
        assert_eq!(
            body["message"],
            format!("admission webhook \"inject.kubexit.io\" denied the request: {expected}"),
            "{body}"
        );
        let (code, _) = cluster.get(&enabled, &bad);
        assert_eq!(code, 404, "a denied pod is not stored");
    }
}

#[test]
fn with_the_webhook_stopped_the_failure_policy_decides() {
    let test = "with_the_webhook_stopped_the_failure_policy_decides";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let certificate = SelfSigned::make(&[]);
    let server = webhook::Webhook::start(&certificate.cert(), &certificate.key(), &[]);
    let ignore = Registration::new(cluster, &certificate, server.port, "Ignore");
    let fail = Registration::new(cluster, &certificate, server.port, "Fail");
    let (lenient, strict) = (ignore.namespace(), fail.namespace());
    wait_until_called(cluster, &lenient);
    wait_until_called(cluster, &strict);

    server.process.signal(Signal::SIGTERM);
    let done = server.process.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);

    // Ignore: created as written, without kubexit.
    let (code, stored) = cluster.create(&lenient, &pod("report", sidecars()), false);
    assert_eq!(code, 201, "create: {stored}");
    assert!(!is_injected(&stored));
    assert_eq!(command_of(&stored, 0), &json!(["sh", "-c", "echo done"]));

    // Fail: not created, and the API server says why.
    let (code, body) = cluster.create(&strict, &pod("report", sidecars()), false);
    assert!(code >= 500 || code == 400 || code == 403, "{code}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("failed calling webhook \"inject.kubexit.io\""),
        "{body}"
    );
    // ...unless the pod opts out by label, which keeps it from the webhook.
    let mut opted_out = pod("opted-out", sidecars());
    opted_out["metadata"]["labels"] = json!({"kubexit.io/inject": "disabled"});
    let (code, stored) = cluster.create(&strict, &opted_out, false);
    assert_eq!(code, 201, "create: {stored}");
}

/// Every object of `text` by server-side dry run: those of a namespace in
/// `namespace`, the others cluster-wide. Returns how many were accepted.
fn dry_run(cluster: &Cluster, origin: &str, text: &str, namespace: &str) -> usize {
    let mut accepted = 0;
    for mut object in manifest::parse(text, origin).unwrap() {
        if object["metadata"].get("namespace").is_some() {
            object["metadata"]["namespace"] = json!(namespace);
        }
        let (code, body) = cluster.create(namespace, &object, true);
        assert_eq!(
            code, 201,
            "{origin}: the API server refuses {} {}: {}",
            object["kind"], object["metadata"]["name"], body["message"]
        );
        accepted += 1;
    }
    accepted
}

#[test]
fn the_deployment_manifests_are_accepted_by_a_server_side_dry_run() {
    let test = "the_deployment_manifests_are_accepted_by_a_server_side_dry_run";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let dir = root().join("deploy/webhook");
    let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap();
    // Its own namespace, as restricted as the manifest asks.
    let manifest_text = read("webhook.yaml");
    let objects = manifest::parse(&manifest_text, "webhook.yaml").unwrap();
    let namespace_labels = objects
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .map(|n| n["metadata"]["labels"].clone())
        .expect("a Namespace");
    assert_eq!(
        namespace_labels["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let namespace = cluster.namespace_labelled("webhook-deploy", &namespace_labels);

    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_eq!(
        dry_run(cluster, "webhook.yaml", &manifest_text, &namespace),
        5
    );
    assert_eq!(
        dry_run(
            cluster,
            "mutating-webhook.yaml",
            &read("mutating-webhook.yaml"),
            &namespace
        ),
        1
    );
    // The opt-in rights to read pull secrets: a ClusterRole and one binding.
    assert_eq!(
        dry_run(
            cluster,
            "pull-secrets.yaml",
            &read("pull-secrets.yaml"),
            &namespace
        ),
        2
    );
    let self_signed = SelfSigned::make(&["--namespace", &namespace]);
    let text = serde_json::to_string(&self_signed.objects[0]).unwrap()
        + &serde_json::to_string(&self_signed.objects[1]).unwrap();
    assert_eq!(dry_run(cluster, "self-signed.sh", &text, &namespace), 2);

    // What the Deployment makes: a Pod the restricted namespace admits,
    // once its ServiceAccount exists.
    let account = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .unwrap();
    let (code, body) = cluster.create(&namespace, &with_namespace(account, &namespace), false);
    assert_eq!(code, 201, "{body}");
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let template = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["image"], inject::pod::default_image());
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(container["resources"]["requests"]["memory"].is_string());
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kubexit-webhook-x", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let (code, body) = cluster.create(&namespace, &pod, true);
    assert_eq!(
        code, 201,
        "the restricted namespace refuses the webhook's pod: {body}"
    );

    // cert-manager's objects, against the fields of its CRDs.
    let crds = fs::read_to_string(fixtures("webhook").join("cert-manager-crds.yaml")).unwrap();
    for crd in manifest::parse(&crds, "cert-manager-crds.yaml").unwrap() {
        let (code, body) = cluster.create("", &crd, false);
        assert!(
            code == 201 || code == 409,
            "install {}: {body}",
            crd["metadata"]["name"]
        );
    }
    let issuer = json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                        "metadata": {"name": "probe"}, "spec": {"selfSigned": {}}});
    eventually_slow("cert-manager's CRDs to be served", || {
        cluster.create(&namespace, &issuer, true).0 == 201
    });
    // A misspelt field is refused: the check has teeth.
    let misspelt = json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                          "metadata": {"name": "probe"}, "spec": {"selfSignd": {}}});
    assert_ne!(cluster.create(&namespace, &misspelt, true).0, 201);
    assert_eq!(
        dry_run(
            cluster,
            "cert-manager.yaml",
            &read("cert-manager.yaml"),
            &namespace
        ),
        4
    );
}

fn with_namespace(object: &Value, namespace: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!(namespace);
    object
}

/// A mutating webhook in the test process, over TLS on loopback, that
/// injects [`IstioAdditions`] into every pod it is sent, and keeps the
/// pods it was sent. Stops when dropped.
struct FakeIstio {
    port: u16,
    ca: Vec<u8>,
    /// The pods it was sent, each with its namespace.
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl FakeIstio {
    fn start() -> FakeIstio {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let tls = loopback_tls::server_config(dir.path());
        let ca = fs::read(dir.path().join("ca.crt")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let additions = IstioAdditions::from_golden();
        let (kept, stopping) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let Ok(conn) = rustls::ServerConnection::new(tls.clone()) else {
                    continue;
                };
                let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                let mut length = 0;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = trimmed.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let Ok(review) = serde_json::from_slice::<Value>(&body) else {
                    continue;
                };
                let pod = review["request"]["object"].clone();
                let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
                if let Some(patch) = additions.patch(&pod) {
                    let bytes = serde_json::to_vec(&patch).unwrap();
                    response["patchType"] = json!("JSONPatch");
                    response["patch"] =
                        serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap();
                }
                let namespace = review["request"]["namespace"].as_str().unwrap_or_default();
                kept.lock().unwrap().push((namespace.to_owned(), pod));
                let answer = json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": response,
                })
                .to_string();
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.flush();
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        });
        FakeIstio {
            port,
            ca,
            seen,
            stop,
            _dir: dir,
        }
    }

    /// Registers it as a MutatingWebhookConfiguration named `name`
    /// (webhooks run in the order of their configurations' names), for the
    /// namespaces labelled `labels`. Deleted when dropped.
    fn register<'c>(&self, cluster: &'c Cluster, name: &str, labels: &Value) -> Registered<'c> {
        let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(self.ca.clone())).unwrap();
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "istio.kubexit.test",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{}/inject", self.port),
                    "caBundle": ca_bundle,
                },
                "rules": [{
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }],
                "namespaceSelector": {"matchLabels": labels},
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }],
        });
        let (code, body) = cluster.create("", &configuration, false);
        assert_eq!(code, 201, "register the mesh's webhook: {body}");
        Registered {
            cluster,
            name: name.to_owned(),
        }
    }

    /// The pods it was sent in `namespace`, in order.
    fn seen_in(&self, namespace: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(seen_in, _)| seen_in == namespace)
            .map(|(_, pod)| pod.clone())
            .collect()
    }
}

impl Drop for FakeIstio {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A configuration of the test's own, deleted when dropped.
struct Registered<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.cluster.delete(&format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
            self.name
        ));
    }
}

/// The `KUBEXIT_` variables of the container `name`, as `NAME=value`.
fn kubexit_variables(pod: &Value, name: &str) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"].as_str().unwrap().starts_with("KUBEXIT_"))
        .map(|e| {
            format!(
                "{}={}",
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect()
}

/// `pod` with the volume of its service account token, which the API
/// server names `kube-api-access-` and five random characters, named
/// `kube-api-access` wherever it is named.
fn token_volume_renamed(pod: &Value) -> Value {
    let generated = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|name| name.starts_with("kube-api-access-"));
    let Some(generated) = generated else {
        return pod.clone();
    };
    let text = pod
        .to_string()
        .replace(&format!("\"{generated}\""), "\"kube-api-access\"");
    serde_json::from_str(&text).unwrap()
}

/// Mutating webhooks run in the order of their configurations' names, so a
/// pod may reach kubexit's before or after a mesh's. Here a mesh's injector
/// of the test's own (adding Istio's proxy as its golden output does) is
/// registered once before kubexit's and once after, for two namespaces;
/// both webhooks reinvoked if needed. Both orders give the same pod: the
/// main waits for the proxy and quits it, the proxy exactly as Istio wrote
/// it, the record true (it undoes kubexit and leaves Istio's additions).
/// kubexit's patch on its reinvocation touches neither of Istio's
/// containers, and a second look at the result patches nothing.
#[test]
fn beside_a_meshs_injector_either_order_gives_the_same_coordinated_pod() {
    let test = "beside_a_meshs_injector_either_order_gives_the_same_coordinated_pod";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let certificate = SelfSigned::make(&[]);
    let (server, port) = start_as_deployed(&certificate);
    // As deploy/webhook registers it: reinvoked if needed.
    let kubexit_registration = Registration::new(cluster, &certificate, port, "Fail");
    let kubexit_name = &kubexit_registration.name;
    let istio = FakeIstio::start();
    let mut namespaces = Vec::new();
    let mut registered = Vec::new();
    for (order, prefix) in [("before", "a"), ("after", "z")] {
        // Named so that it sorts before or after kubexit's configuration.
        let name = format!("{prefix}-{}", k8s::unique("istio"));
        assert_eq!(name.as_str() < kubexit_name.as_str(), order == "before");
        let mut labels = kubexit_registration.labels.clone();
        labels["kubexit.test/istio"] = json!(order);
        registered.push(istio.register(cluster, &name, &labels));
        namespaces.push((order, cluster.namespace_labelled("webhook-mesh", &labels)));
    }
    // Dry runs: admission runs in full, the pod comes back as it would be
    // stored, and nothing is.
    let admitted = |namespace: &str| -> Value {
        let mut admitted = Value::Null;
        eventually_slow("both webhooks to be called", || {
            let (code, body) = cluster.create(namespace, &istio_app_pod(), true);
            assert_eq!(code, 201, "dry run: {body}");
            admitted = body;
            let proxied = admitted["spec"]["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "istio-proxy"));
            proxied && kubexit_variables(&admitted, "pi").contains(&"KUBEXIT_QUIT=istio".to_owned())
        });
        admitted
    };
    let (before, after) = (&namespaces[0].1, &namespaces[1].1);
    let first = admitted(before);
    let second = admitted(after);

    // The mesh's webhook saw the plain pod in one order, kubexit's pod in
    // the other (before its own proxy was there): both orders happened.
    let annotated = |pod: &Value, key: &str| pod["metadata"]["annotations"].get(key).is_some();
    let kubexit_first = |namespace: &str| -> Option<Value> {
        istio.seen_in(namespace).into_iter().find(|pod| {
            annotated(pod, "kubexit.io/injected") && !annotated(pod, "sidecar.istio.io/status")
        })
    };
    assert!(
        istio
            .seen_in(before)
            .iter()
            .all(|pod| !annotated(pod, "kubexit.io/injected")
                || annotated(pod, "sidecar.istio.io/status")),
        "{before}: kubexit went first"
    );
    let as_seen = kubexit_first(after).expect("kubexit went first in the other order");

    // The same pod either way (but for the name of the token's volume,
    // which the API server makes anew for each pod).
    let (first, second) = (token_volume_renamed(&first), token_volume_renamed(&second));
    for part in ["/spec", "/metadata/annotations", "/metadata/labels"] {
        assert_eq!(
            first.pointer(part),
            second.pointer(part),
            "{part} differs between the orders"
        );
    }
    assert_eq!(
        kubexit_variables(&second, "pi"),
        [
            "KUBEXIT_NAME=pi",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_BIRTH_PROBES=http://127.0.0.1:15021/healthz/ready",
            "KUBEXIT_QUIT=istio",
        ]
    );
    let init: Vec<&str> = second["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["kubexit", "istio-init"]);

    // The record is true: uninjected, the pod is the one Istio's webhook
    // alone makes of the app, as the API server admits it (in a namespace
    // neither webhook serves). So Istio's containers and volumes are
    // exactly as Istio wrote them, and kubexit's are gone without a trace.
    let additions = IstioAdditions::from_golden();
    let alone = webhook::patched(
        &istio_app_pod(),
        &additions.patch(&istio_app_pod()).unwrap(),
    );
    let plain = cluster.namespace("webhook-mesh-plain");
    let (code, alone) = cluster.create(&plain, &alone, true);
    assert_eq!(code, 201, "dry run of Istio's pod alone: {alone}");
    let alone = token_volume_renamed(&alone);
    let back = inject::uninject(&second).unwrap();
    // The token's volume is first or last as the API server added it
    // before or after Istio's: the volumes are compared by name.
    let by_name = |pod: &Value| -> Value {
        let mut spec = pod["spec"].clone();
        let volumes = spec["volumes"].as_array_mut().unwrap();
        volumes.sort_by_key(|v| v["name"].as_str().unwrap().to_owned());
        spec
    };
    assert_eq!(by_name(&back), by_name(&alone), "uninjected: {back:#}");
    let mut annotations = alone["metadata"]["annotations"].clone();
    assert_eq!(back["metadata"]["annotations"], annotations);
    assert_eq!(back["metadata"]["labels"], alone["metadata"]["labels"]);
    // Injected, only kubexit's record is added to the annotations.
    annotations[inject::record::key()] =
        second["metadata"]["annotations"][inject::record::key()].clone();
    assert_eq!(second["metadata"]["annotations"], annotations);
    let istio_containers = |pod: &Value| -> Vec<Value> {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|list| pod["spec"][list].as_array().unwrap().clone())
            .filter(|c| c["name"].as_str().unwrap().starts_with("istio-"))
            .collect()
    };
    assert_eq!(istio_containers(&second), istio_containers(&alone));
    assert_eq!(istio_containers(&second).len(), 2);

    // kubexit's patch on its reinvocation (the pod as the mesh's webhook
    // answered it) adds to the main container only, and patches nothing
    // once applied.
    let options = Options::default();
    let reinvoked = webhook::patched(&as_seen, &additions.patch(&as_seen).unwrap());
    let review = |pod: &Value| -> webhook::Answer {
        let body = serde_json::to_vec(&webhook::review_of(pod)).unwrap();
        let reviewed = kubexit::webhook::review::review(&body, &options).unwrap();
        webhook::answer(&serde_json::from_slice(&reviewed.answer).unwrap())
    };
    let patch = review(&reinvoked)
        .patch
        .expect("a patch on the reinvocation");
    let proxy_at = "/spec/containers/1";
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        assert!(
            path.starts_with("/spec/containers/0/") || path.starts_with("/metadata/annotations/"),
            "the patch reaches beyond the main container: {op}"
        );
        assert!(!path.starts_with(proxy_at), "{op}");
        assert!(!path.starts_with("/spec/initContainers"), "{op}");
    }
    let once = webhook::patched(&reinvoked, &patch);
    assert!(
        review(&once).patch.is_none(),
        "a second review patches again"
    );
    server.wait_for_log(&format!("Pod {after}/pi: injected into pi"));
}
