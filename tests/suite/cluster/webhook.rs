//! The webhook deployed in the cluster as `deploy/webhook/` says, on the
//! real node: `webhook.yaml` applied, then what `self-signed.sh` prints
//! (the Secret, and the MutatingWebhookConfiguration with its caBundle).
//! The API server calls the webhook's pod; the Job controller's pods are
//! what it is sent; the kubelet runs them to the end.
//!
//! What happens, in order: the Deployment's pod starts (it waits for the
//! Secret's volume, made just after) and listens; the registration is
//! loaded by the API server; a user creates a Job in a namespace labelled
//! `kubexit.io/inject=enabled`; the Job controller creates its pod, the
//! API server sends the pod to the webhook, stores what comes back, and
//! the kubelet runs it: kubexit installed by its init container, the
//! sidecar stopped by kubexit when the main has ended, the Job Complete.
//! With the webhook scaled to 0, `failurePolicy: Fail` refuses the Job
//! controller's creations (its events say so) and the Job waits without a
//! pod; the webhook's own namespace is not labelled, so its ReplicaSet
//! creates the new webhook pod even then; the Job controller's next retry
//! is admitted and injected. A Job whose containers have no `command`
//! is wrapped in what their images run, which the webhook reads from the
//! test's registry (`util::registry`, plain HTTP on loopback, named with
//! `--insecure-registries`), and completes: the node runs the same images,
//! imported from archives under the same names, since it pulls from no
//! registry.
//!
//! What is adapted, because this node is not a cluster (each said again
//! where it is done):
//!
//! - **The host's network.** Nothing routes Service traffic to a pod
//!   here (no kube-proxy; Endpoints refuse loopback addresses), and the
//!   API server runs on the host. The webhook's pod uses the host's
//!   network and listens on `127.0.0.1:PORT`, and the Service becomes
//!   `type: ExternalName, externalName: localhost` on that port: for a
//!   Service the API server dials what the Service names and checks the
//!   certificate against `NAME.NS.svc`, which `self-signed.sh` puts in
//!   it. Of the two ways the node offers, this is the one whose
//!   readinessProbe works unchanged: the kubelet's httpGet goes to the
//!   pod's IP, 127.0.0.1 for a pod on the host's network. PORT is a free
//!   port, not 8443, because the host's ports are shared by every node on
//!   the machine.
//! - **Pod Security.** The namespace enforces `privileged` instead of
//!   `restricted`: `restricted` (and `baseline`) refuse `hostNetwork`.
//!   The Deployment still meets everything else `restricted` asks.
//! - **One replica, not two**: two pods on one node's network cannot both
//!   listen on the port (the scheduler does not even place the second).
//! - **The image** as the node has it ([`node::kubexit_image`], the
//!   published name, loaded from an archive).
//! - **A registration of this run only**: its `namespaceSelector` also
//!   asks for the label `kubexit.test/run`, so that while it is there the
//!   API server sends it only the namespaces of this run, never another
//!   test's. It is deleted, with the `kubexit` namespace, when the test
//!   ends, passed or failed.
//!
//! The tests deploy into the namespace `kubexit` and use the host's
//! network: they hold [`node::host_network`] from the installation until
//! the webhook's pods are gone.

use std::process::{Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Namespace, manifest, only};
use crate::util::k8s::unique;
use crate::util::node::{self, NODE_DEADLINE, Node, terminated, wait_for};
use crate::util::{assert_contains, assert_lacks, free_port};

/// The names `deploy/webhook/` gives.
const NAMESPACE: &str = "kubexit";
const DEPLOYMENT: &str = "kubexit-webhook";
const SERVICE: &str = "kubexit-webhook";
const CONFIGURATION: &str = "kubexit";
const WEBHOOK_PODS: &str = "app.kubernetes.io/name=kubexit-webhook";

fn configuration_path() -> String {
    format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION}")
}

/// The webhook installed from `deploy/webhook/`, adapted to the node.
/// Dropped, it deletes the registration first (no pod is sent to a
/// webhook that is going), then the `kubexit` namespace, and waits until
/// the webhook's pods are gone, so that the host's port is free again.
struct Installed {
    node: &'static Node,
    /// The labels of a namespace the registration selects.
    labels: Value,
    _host: MutexGuard<'static, ()>,
}

impl Installed {
    fn install(node: &'static Node) -> Installed {
        Installed::install_with(node, &[])
    }

    /// [`Installed::install`], the webhook given `extra` arguments too.
    fn install_with(node: &'static Node, extra: &[&str]) -> Installed {
        let host = node::host_network();
        clear_earlier_installation(node);
        // From here on, whatever fails, the drop cleans up.
        let mut installed = Installed {
            node,
            labels: Value::Null,
            _host: host,
        };
        let port = free_port();
        let run = unique("webhook");

        let mut objects = manifest("deploy/webhook/webhook.yaml");
        for object in &mut objects {
            adapt_to_the_node(object, port, extra);
        }
        node.create_all(NAMESPACE, &objects);

        let mut printed = self_signed();
        let kinds: Vec<&str> = printed.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds, ["Secret", "MutatingWebhookConfiguration"]);
        assert_names_the_service(&printed[0]);
        installed.labels = register_for_this_run(&mut printed[1], port, &run);
        node.create_all(NAMESPACE, &printed);
        installed.ready_pod();
        installed
    }

    /// A namespace the registration selects, deleted when dropped.
    fn namespace(&self, prefix: &str) -> Namespace {
        Namespace {
            node: self.node,
            name: self.node.namespace(prefix, &self.labels),
            host: None,
        }
    }

    /// The webhook's pods, those being deleted too.
    fn pods(&self) -> Vec<Value> {
        self.node.pods(NAMESPACE, WEBHOOK_PODS)
    }

    /// Waits until a webhook pod is ready, and returns it.
    fn ready_pod(&self) -> Value {
        wait_for(
            "the webhook's pod to be ready",
            NODE_DEADLINE,
            || self.pods().into_iter().find(is_ready),
            || self.node.describe(NAMESPACE),
        )
    }

    /// What the webhook's pod has logged.
    fn log(&self) -> String {
        let pod = self.ready_pod();
        self.node.logs(NAMESPACE, &name_of(&pod), "webhook", false)
    }

    /// `kubectl -n kubexit scale deploy/kubexit-webhook --replicas N`.
    fn scale(&self, replicas: u32) {
        let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale");
        let scale = json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
            "spec": {"replicas": replicas},
        });
        let (code, body) = self.node.api.request("PUT", &path, Some(&scale));
        assert_eq!(code, 200, "scale the webhook to {replicas}: {body}");
    }

    /// Waits until the API server calls the webhook for `namespace`: it
    /// loads a new registration a moment after it is stored. A dry run
    /// asks, storing nothing (the webhook declares no side effects).
    fn wait_until_called(&self, namespace: &str) {
        wait_for(
            "the API server to call the webhook",
            NODE_DEADLINE,
            || {
                let (code, body) = self.node.api.create(namespace, &probe(), true);
                (code == 201 && is_injected(&body)).then_some(())
            },
            || self.node.describe(NAMESPACE),
        );
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let api = &self.node.api;
        let _ = api.delete(&configuration_path());
        let _ = api.delete(&format!("/api/v1/namespaces/{NAMESPACE}"));
        // The namespace's deletion would give the pod its 30 s; 1 s is
        // enough for a webhook nobody calls any more.
        let _ = api.delete(&format!(
            "/api/v1/namespaces/{NAMESPACE}/pods?gracePeriodSeconds=1"
        ));
        // Without a panic (this may run while a failing test unwinds).
        let start = Instant::now();
        while !self.node.pods(NAMESPACE, "").is_empty() && start.elapsed() < NODE_DEADLINE {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A run that was killed leaves its installation behind: it goes first,
/// and the namespace must be gone before it can be made again.
fn clear_earlier_installation(node: &Node) {
    let path = format!("/api/v1/namespaces/{NAMESPACE}");
    if node.api.request("GET", &path, None).0 == 404 {
        return;
    }
    let _ = node.api.delete(&configuration_path());
    let _ = node.api.delete(&path);
    wait_for(
        "the kubexit namespace of an earlier run to be gone",
        NODE_DEADLINE,
        || (node.api.request("GET", &path, None).0 == 404).then_some(()),
        || node.describe(NAMESPACE),
    );
}

/// What differs from `webhook.yaml` on this node (see the module's essay).
fn adapt_to_the_node(object: &mut Value, port: u16, extra: &[&str]) {
    match object["kind"].as_str().unwrap_or_default() {
        "Namespace" => {
            // `restricted` refuses hostNetwork, as `baseline` does.
            let labels = &mut object["metadata"]["labels"];
            assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
            labels["pod-security.kubernetes.io/enforce"] = json!("privileged");
        }
        "Deployment" => {
            let spec = &mut object["spec"];
            // Two pods on the host's network cannot share its port.
            spec["replicas"] = json!(1);
            let pod = &mut spec["template"]["spec"];
            // The API server runs on the host, and nothing routes a
            // Service's traffic to a pod here.
            pod["hostNetwork"] = json!(true);
            let container = &mut pod["containers"][0];
            assert_eq!(container["name"], "webhook");
            container["image"] = json!(node::kubexit_image());
            // Loopback only (0.0.0.0 is the machine's every interface), on
            // a port no other node of the machine uses; the probes follow
            // the named port.
            container["ports"][0]["containerPort"] = json!(port);
            let args = container["args"]
                .as_array_mut()
                .expect("the webhook's args");
            args.extend(["--listen".into(), format!("127.0.0.1:{port}").into()]);
            args.extend(extra.iter().map(|a| json!(a)));
        }
        "Service" => {
            // What the API server dials for this Service: localhost:PORT,
            // where the webhook listens. No selector: no Endpoints to make.
            assert_eq!(object["metadata"]["name"], SERVICE);
            object["spec"] = json!({
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port}],
            });
        }
        _ => {}
    }
}

/// What `deploy/webhook/self-signed.sh` prints, as the docs run it (no
/// options: the namespace and Service of `webhook.yaml`).
fn self_signed() -> Vec<Value> {
    let script = crate::util::files::root().join("deploy/webhook/self-signed.sh");
    let made = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        made.status.success(),
        "self-signed.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let text = String::from_utf8_lossy(&made.stdout);
    kubexit::inject::manifest::parse(&text, "self-signed.sh").expect("self-signed.sh writes YAML")
}

/// The Secret's certificate is for `NAME.NS.svc`, the name the API server
/// checks when it calls a webhook registered by Service.
fn assert_names_the_service(secret: &Value) {
    assert_eq!(secret["metadata"]["name"], "kubexit-webhook-tls");
    let encoded = secret["data"]["tls.crt"].as_str().expect("tls.crt");
    let mut openssl = Command::new("sh")
        .args(["-c", "base64 -d | openssl x509 -noout -ext subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    std::io::Write::write_all(&mut openssl.stdin.take().unwrap(), encoded.as_bytes())
        .expect("write the certificate to openssl");
    let read = openssl.wait_with_output().expect("openssl's answer");
    assert_contains(
        &String::from_utf8_lossy(&read.stdout),
        &format!("DNS:{SERVICE}.{NAMESPACE}.svc"),
    );
}

/// The registration as printed, but for the port, and for the namespaces
/// of this run only. Returns the labels of a namespace it selects.
fn register_for_this_run(configuration: &mut Value, port: u16, run: &str) -> Value {
    assert_eq!(configuration["metadata"]["name"], CONFIGURATION);
    let webhook = &mut configuration["webhooks"][0];
    assert!(webhook["clientConfig"]["caBundle"].is_string(), "{webhook}");
    assert_eq!(webhook["failurePolicy"], "Fail");
    let service = &mut webhook["clientConfig"]["service"];
    assert_eq!(
        *service,
        json!({"namespace": NAMESPACE, "name": SERVICE, "path": "/inject", "port": 443})
    );
    // The port the ExternalName Service names and the webhook listens on.
    service["port"] = json!(port);
    let mut labels = webhook["namespaceSelector"]["matchLabels"].clone();
    assert_eq!(labels, json!({"kubexit.io/inject": "enabled"}));
    labels["kubexit.test/run"] = json!(run);
    webhook["namespaceSelector"]["matchLabels"] = labels.clone();
    labels
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|all| {
            all.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn is_injected(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get("kubexit.io/injected")
        .is_some()
}

/// A container of the alpine stand-in (busybox) running `script`.
fn shell(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "docker.io/library/alpine:3.20", "command": ["sh", "-c", script]})
}

const MAIN: &str = "echo working; sleep 1; echo done";
const PROXY: &str = "trap 'exit 0' TERM; echo proxy up; while :; do sleep 0.2; done";

/// A Job as a user writes it: a main container and a proxy that runs
/// until it is stopped, the proxy named a sidecar by annotation.
fn job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"kubexit.io/sidecars": "proxy"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [shell("main", MAIN), shell("proxy", PROXY)],
            },
        }},
    })
}

/// A pod that asks for kubexit, for dry runs.
fn probe() -> Value {
    let template = &job("probe")["spec"]["template"];
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    })
}

/// The pod read back as the webhook made it: kubexit's record, its init
/// container, and every command run by kubexit.
fn assert_injected(pod: &Value) {
    assert!(is_injected(pod), "not injected: {pod:#}");
    let spec = &pod["spec"];
    assert_eq!(spec["initContainers"][0]["name"], "kubexit", "{spec:#}");
    assert_eq!(spec["initContainers"][0]["image"], node::kubexit_image());
    for (index, script) in [MAIN, PROXY].iter().enumerate() {
        assert_eq!(
            spec["containers"][index]["command"],
            json!(["/kubexit/kubexit", "sh", "-c", script]),
            "{spec:#}"
        );
    }
}

/// The Job's end as the docs say it: the main succeeded, and kubexit
/// stopped the proxy because the main had ended.
fn assert_coordinated(pod: &Value) {
    let (code, message) = terminated(pod, "main");
    assert_eq!(code, 0, "{message}");
    let (code, message) = terminated(pod, "proxy");
    assert_eq!(code, 0, "{message}");
    assert!(
        message.starts_with("proxy: stopped because main died"),
        "{message}"
    );
}

/// The namespace's events of `reason` about `object`: their messages.
fn events(node: &Node, namespace: &str, object: &str, reason: &str) -> Vec<String> {
    let events = node.get(&format!("/api/v1/namespaces/{namespace}/events"));
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == object && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

const FAILED_CALLING: &str = "failed calling webhook \"inject.kubexit.io\"";

#[test]
fn jobs_in_a_labelled_namespace_are_injected_by_the_deployed_webhook_and_complete_elsewhere_left_alone()
 {
    let test = "cluster_webhook_injects_jobs";
    let Some(node) = node::node(test) else {
        return;
    };
    let installed = Installed::install(node);
    let labelled = installed.namespace("webhook-on");
    let unlabelled = Namespace {
        node,
        name: node.namespace("webhook-off", &json!({})),
        host: None,
    };
    installed.wait_until_called(&labelled);

    node.create_all(&labelled, &[job("report")]);
    node.create_all(&unlabelled, &[job("report")]);

    // The Job controller's pod, sent to the webhook, run by the kubelet.
    let pods = node.complete_job(&labelled, "report");
    let (pod, _) = only(&pods);
    assert_injected(pod);
    assert_coordinated(pod);
    let log = installed.log();
    assert_contains(
        &log,
        &format!("Pod {labelled}/report-*: injected into main, proxy"),
    );

    // Without the label: stored as written, never sent to the webhook.
    let pod = wait_for(
        "the Job controller's pod in the unlabelled namespace",
        NODE_DEADLINE,
        || node.pods(&unlabelled, "job-name=report").into_iter().next(),
        || node.describe(&unlabelled),
    );
    assert!(!is_injected(&pod), "{pod:#}");
    assert!(pod["spec"]["initContainers"].is_null(), "{pod:#}");
    assert_eq!(
        pod["spec"]["containers"][1]["command"],
        json!(["sh", "-c", PROXY])
    );
    assert_lacks(&installed.log(), &unlabelled);
}

#[test]
fn with_the_webhook_down_a_jobs_pod_waits_for_it_and_the_webhooks_own_pod_is_never_sent_to_it() {
    let test = "cluster_webhook_failure_policy";
    let Some(node) = node::node(test) else {
        return;
    };
    let installed = Installed::install(node);
    let ns = installed.namespace("webhook-down");
    installed.wait_until_called(&ns);
    let first = name_of(&installed.ready_pod());

    installed.scale(0);
    wait_for(
        "no webhook pod left",
        NODE_DEADLINE,
        || installed.pods().is_empty().then_some(()),
        || node.describe(NAMESPACE),
    );
    // Told to stop, it failed /readyz at once and served on for the
    // Deployment's --shutdown-delay: the kubelet's probes saw it unready.
    let unready = wait_for(
        "the kubelet to see the stopping webhook unready",
        NODE_DEADLINE,
        || {
            events(node, NAMESPACE, &first, "Unhealthy")
                .into_iter()
                .next()
        },
        || node.describe(NAMESPACE),
    );
    assert_contains(
        &unready,
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    );

    // failurePolicy Fail: the Job controller's creations are refused.
    node.create_all(&ns, &[job("held")]);
    let refused = wait_for(
        "the Job controller's creation of a pod to be refused",
        NODE_DEADLINE,
        || events(node, &ns, "held", "FailedCreate").into_iter().next(),
        || node.describe(&ns),
    );
    assert_contains(&refused, FAILED_CALLING);
    assert!(
        node.pods(&ns, "job-name=held").is_empty(),
        "{}",
        node.describe(&ns)
    );

    // The objectSelector's way out: a pod labelled kubexit.io/inject=disabled
    // is not sent to the webhook, so it is created.
    let mut opted_out = job("opted-out");
    opted_out["spec"]["template"]["metadata"]["labels"] = json!({"kubexit.io/inject": "disabled"});
    opted_out["spec"]["template"]["spec"]["containers"] = json!([shell("main", "echo on my own")]);
    node.create_all(&ns, &[opted_out]);
    let pod = wait_for(
        "the opted-out Job's pod",
        NODE_DEADLINE,
        || node.pods(&ns, "job-name=opted-out").into_iter().next(),
        || node.describe(&ns),
    );
    assert!(!is_injected(&pod), "{pod:#}");

    // Still no webhook answers, right before it is scaled up again.
    let (code, body) = node.api.create(&ns, &probe(), true);
    assert_ne!(code, 201, "a webhook answered: {body}");
    assert_contains(body["message"].as_str().unwrap_or_default(), FAILED_CALLING);
    installed.scale(1);

    // Its ReplicaSet's pod was created while no webhook answered: its
    // namespace is not labelled, so it was never sent to one.
    let webhook = installed.ready_pod();
    assert_ne!(webhook["metadata"]["name"], first);
    assert!(!is_injected(&webhook), "{webhook:#}");
    let namespace = node.get(&format!("/api/v1/namespaces/{NAMESPACE}"));
    assert!(
        namespace["metadata"]["labels"]
            .get("kubexit.io/inject")
            .is_none(),
        "{namespace:#}"
    );
    let owner = webhook["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .expect("the webhook pod's ReplicaSet");
    assert_eq!(
        events(node, NAMESPACE, owner, "FailedCreate"),
        Vec::<String>::new()
    );

    // The Job controller's retry is admitted and injected; the Job completes.
    let pods = node.complete_job(&ns, "held");
    let (pod, _) = only(&pods);
    assert_injected(pod);
    assert_coordinated(pod);
}

#[test]
fn a_job_whose_containers_have_no_command_runs_what_their_images_say_wrapped_and_completes() {
    let test = "cluster_webhook_reads_images_from_their_registry";
    let Some(node) = node::node(test) else {
        return;
    };
    let Some(registries) = crate::util::registry::registries(test) else {
        return;
    };
    // The node pulls from no registry: it runs the images imported from
    // archives, under the names the webhook reads them by from the test's
    // registry (plain HTTP on loopback, which the webhook's pod on the
    // host's network reaches).
    let tag = unique("e2e");
    let main_image = registries.plain.image(&format!("e2e/main:{tag}"));
    let proxy_image = registries.plain.image(&format!("e2e/proxy:{tag}"));
    let base =
        crate::util::files::target_dir().join("node-images/docker.io_library_alpine_3.20.tar");
    let dir = tempfile::tempdir().unwrap();
    let mut archives = Vec::new();
    for (image, entrypoint, cmd) in [
        (
            &main_image,
            Some(r#"["sh","-c"]"#),
            json!([MAIN]).to_string(),
        ),
        (&proxy_image, None, json!(["sh", "-c", PROXY]).to_string()),
    ] {
        let local = format!("e2e-{}", archives.len());
        let archive = dir.path().join(format!("{local}.tar"));
        registries
            .build_on(&base, &local, entrypoint, &cmd)
            .and_then(|()| {
                let repository = image.split_once('/').expect("AUTHORITY/REPOSITORY").1;
                registries.push(&local, repository, "oci")
            })
            .and_then(|()| registries.save(&local, &archive, image))
            .unwrap_or_else(|e| panic!("{e}"));
        archives.push(archive);
    }
    node.import(&archives).unwrap_or_else(|e| panic!("{e}"));

    let installed = Installed::install_with(
        node,
        &["--insecure-registries", &registries.plain.authority],
    );
    let ns = installed.namespace("webhook-images");
    installed.wait_until_called(&ns);
    let mut job = job("imaged");
    job["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "main", "image": main_image},
        {"name": "proxy", "image": proxy_image},
    ]);
    node.create_all(&ns, &[job]);

    let pods = node.complete_job(&ns, "imaged");
    let (pod, _) = only(&pods);
    let containers = &pod["spec"]["containers"];
    assert_eq!(
        containers[0]["command"],
        json!(["/kubexit/kubexit", "sh", "-c"]),
        "ENTRYPOINT, wrapped"
    );
    assert_eq!(containers[0]["args"], json!([MAIN]), "CMD");
    assert_eq!(
        containers[1]["command"],
        json!(["/kubexit/kubexit", "sh", "-c", PROXY]),
        "CMD only, wrapped"
    );
    assert_coordinated(pod);
    let record = pod["metadata"]["annotations"]["kubexit.io/injected"]
        .as_str()
        .unwrap_or_default();
    assert_contains(record, &format!("{main_image}@sha256:"));
    assert_contains(
        &installed.log(),
        &format!("Pod {ns}/imaged-*: injected into main, proxy"),
    );
}
