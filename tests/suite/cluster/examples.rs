//! Every manifest of `examples/` run on the node to its documented end:
//! the Job completes, each container ends with the status the docs give,
//! its termination message (`kubectl describe pod`) says why, its log
//! (`kubectl logs`) has kubexit's lines, and where the test keeps the
//! graveyard on the node, the tombstones say what happened.
//!
//! What is adapted, besides what [`super::Adapt`] does for every test:
//! the stand-in images (`tests/suite/containers/stand-ins.sh`) play the
//! examples' programs; the Istio Job gets a stand-in of the proxy Istio
//! would inject (serving its readiness and quit endpoints), and its report
//! reads a page of that stand-in instead of a Service (no DNS here); the
//! Cloud SQL Job's main container sleeps 1 s instead of 60.
//! `examples/docker-compose.yaml` is not a Kubernetes manifest; podman
//! plays it (`containers`).

use serde_json::{Value, json};

use super::{Adapt, container, injected, manifest, only, scene, scene_on_host};
use crate::util::assert_contains;
use crate::util::node::{HostDir, terminated};

/// The documented end of a container stopped because `dependency` died:
/// exit status 0, and the termination message says so.
fn stopped_for(pod: &Value, name: &str, dependency: &str) {
    let (code, message) = terminated(pod, name);
    assert_eq!(code, 0, "{message}");
    assert!(
        message.starts_with(&format!("{name}: stopped because {dependency} died")),
        "{message}"
    );
}

/// The documented end of a container whose child succeeded.
fn succeeded(pod: &Value, name: &str) {
    let (code, message) = terminated(pod, name);
    assert_eq!(code, 0, "{message}");
    assert_eq!(
        message,
        format!("{name}: the child exited with status 0 (exit status 0)\n")
    );
}

#[test]
fn the_graveyard_mode_client_server_job_completes_and_its_tombstones_say_how() {
    let Some((node, ns)) = scene("examples_graveyard_client_server") else {
        return;
    };
    let graveyard = HostDir::new();
    let adapt = Adapt {
        graveyard: Some(&graveyard),
        ..Adapt::default()
    };
    node.create_all(
        &ns,
        &adapt.apply(manifest("examples/client-server-job-graveyard.yaml")),
    );
    let pods = node.complete_job(&ns, "example-job-graveyard");
    let (pod, name) = only(&pods);
    succeeded(pod, "client");
    stopped_for(pod, "server", "client");
    let client = graveyard.read("client");
    assert_contains(&client, "Born: ");
    assert_contains(&client, "ExitCode: 0\n");
    let server = graveyard.read("server");
    assert_contains(&server, "Ready: ");
    assert_contains(&server, "ExitCode: 143\nExitStatus: 0\n");
    assert_contains(&server, "Reason: \"stopped because client died");
    assert_contains(
        &node.logs(&ns, &name, "client", false),
        "Birth dependencies ready: server",
    );
    let server_log = node.logs(&ns, &name, "server", false);
    assert_contains(&server_log, "New death: client");
    assert_contains(&server_log, "Terminating child process...");
}

/// Upstream's Job as upstream wrote it: the client's birth dependency is
/// judged by the API server, from the kubelet's own readiness probe of the
/// server (`sleep 10`, then nginx; the probe every 5 s).
#[test]
fn the_api_mode_client_server_job_starts_the_client_once_the_kubelet_says_the_server_is_ready() {
    let Some((node, ns)) = scene_on_host("examples_api_client_server") else {
        return;
    };
    let adapt = Adapt {
        host_network: true,
        ..Adapt::default()
    };
    node.create_all(
        &ns,
        &adapt.apply(manifest("examples/client-server-job-api.yaml")),
    );
    let pods = node.complete_job(&ns, "example-job");
    let (pod, name) = only(&pods);
    succeeded(pod, "client");
    stopped_for(pod, "server", "client");
    let client_log = node.logs(&ns, &name, "client", false);
    assert_contains(&client_log, &format!("Watching pod {ns}/{name}"));
    assert_contains(&client_log, "Birth dependencies ready: server");
}

#[test]
fn the_cloud_sql_proxy_job_completes_with_its_proxy_stopped() {
    let Some((node, ns)) = scene("examples_cloudsql_proxy") else {
        return;
    };
    let graveyard = HostDir::new();
    let adapt = Adapt {
        graveyard: Some(&graveyard),
        secrets: &["cloudsql-credentials"],
        ..Adapt::default()
    };
    let mut documents = adapt.apply(manifest("examples/cloudsql-proxy-job.yaml"));
    let job = documents.iter_mut().find(|d| d["kind"] == "Job").unwrap();
    // One second of work is enough to show it; the example's 60 would
    // only make CI wait.
    container(job, "main")["command"] = json!(["/kubexit/kubexit", "sleep", "1"]);
    node.create_all(&ns, &documents);
    let pods = node.complete_job(&ns, "example");
    let (pod, _) = only(&pods);
    succeeded(pod, "main");
    stopped_for(pod, "cloudsql-proxy", "main");
    assert_contains(&graveyard.read("cloudsql-proxy"), "Ready: ");
}

#[test]
fn the_shared_proxy_job_stops_its_proxy_once_both_mains_have_died() {
    let Some((node, ns)) = scene("examples_shared_proxy") else {
        return;
    };
    let graveyard = HostDir::new();
    let adapt = Adapt {
        graveyard: Some(&graveyard),
        secrets: &["cloudsql-credentials"],
        ..Adapt::default()
    };
    node.create_all(
        &ns,
        &adapt.apply(manifest("examples/shared-proxy-job.yaml")),
    );
    let pods = node.complete_job(&ns, "nightly");
    let (pod, name) = only(&pods);
    succeeded(pod, "migrate");
    succeeded(pod, "report");
    stopped_for(pod, "cloudsql-proxy", "migrate and report");
    let proxy_log = node.logs(&ns, &name, "cloudsql-proxy", false);
    assert_contains(&proxy_log, "Death Policy: all");
    assert_contains(&proxy_log, "New death: migrate");
    assert_contains(&proxy_log, "New death: report");
}

/// The proxy Istio would inject is a stand-in that serves pilot-agent's
/// readiness (15021) and quit (15020) endpoints: the report waits for the
/// first, and once done asks the second, and the proxy ends.
#[test]
fn the_istio_job_waits_for_the_proxy_and_asks_it_to_quit() {
    let Some((node, ns)) = scene("examples_istio") else {
        return;
    };
    let mut documents = Adapt::default().apply(manifest("examples/istio-job.yaml"));
    let job = documents.iter_mut().find(|d| d["kind"] == "Job").unwrap();
    let report = container(job, "report");
    let command: Vec<Value> = report["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|word| match word.as_str() {
            Some("http://reports.reports.svc/run") => json!("http://127.0.0.1:15021/run"),
            _ => word.clone(),
        })
        .collect();
    report["command"] = Value::Array(command);
    job["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "istio-proxy",
            "image": "docker.io/istio/proxyv2:1.24.0",
            "args": ["proxy", "sidecar"],
        }));
    node.create_all(&ns, &documents);
    let pods = node.complete_job(&ns, "report");
    let (pod, name) = only(&pods);
    succeeded(pod, "report");
    assert_eq!(terminated(pod, "istio-proxy").0, 0);
    let report_log = node.logs(&ns, &name, "report", false);
    assert_contains(&report_log, "report run (stand-in)");
    assert_contains(
        &report_log,
        "Quit http://127.0.0.1:15020/quitquitquit: HTTP 200",
    );
    assert_contains(
        &node.logs(&ns, &name, "istio-proxy", false),
        "pilot-agent (stand-in): quitquitquit",
    );
}

/// A native sidecar (an init container with `restartPolicy: Always`) that
/// the kubelet starts first and stops last, waited for through the API
/// (`initContainerStatuses`) as its httpGet readiness probe says.
#[test]
fn the_native_sidecar_job_waits_for_the_kubelets_word_on_the_sidecar_and_completes() {
    let Some((node, ns)) = scene_on_host("examples_native_sidecar") else {
        return;
    };
    let adapt = Adapt {
        host_network: true,
        ..Adapt::default()
    };
    node.create_all(&ns, &adapt.apply(manifest("examples/native-sidecar.yaml")));
    let pods = node.complete_job(&ns, "report");
    let (pod, name) = only(&pods);
    succeeded(pod, "report");
    let log = node.logs(&ns, &name, "report", false);
    assert_contains(&log, "Birth dependencies ready: proxy");
    assert_contains(&log, "psql (stand-in): 1 row");
}

/// The plain manifests of `examples/plain/`, as users apply them:
/// `kubexit inject FILE`, whose output goes to the node unchanged (the
/// image it installs from is the one the node has loaded).
#[test]
fn the_plain_examples_through_kubexit_inject_complete() {
    let Some((node, ns)) = scene("examples_plain_injected") else {
        return;
    };
    let mut documents = injected("examples/plain/cloudsql-proxy-job.yaml");
    container(&mut documents[0], "main")["command"] = json!(["/kubexit/kubexit", "sleep", "1"]);
    documents.extend(injected("examples/plain/client-server-job-graveyard.yaml"));
    let documents = Adapt {
        secrets: &["cloudsql-credentials"],
        ..Adapt::default()
    }
    .apply(documents);
    node.create_all(&ns, &documents);
    for (job, main, sidecar) in [
        ("example", "main", "cloudsql-proxy"),
        ("example-job-graveyard", "client", "server"),
    ] {
        let pods = node.complete_job(&ns, job);
        let (pod, name) = only(&pods);
        succeeded(pod, main);
        stopped_for(pod, sidecar, main);
        assert_contains(
            &node.logs(&ns, &name, sidecar, false),
            &format!("New death: {main}"),
        );
    }
}
