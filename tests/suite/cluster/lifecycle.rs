//! What only a kubelet shows: the SIGTERM it sends every container of a
//! pod at once when the pod is deleted, restarts in place, and native
//! sidecars beside kubexit's. Each pod is made from a plain manifest by
//! `kubexit inject` (the binary under test), as users make it.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{injected, only, scene};
use crate::util::node::{HostDir, NODE_DEADLINE, status_of, statuses, terminated, wait_for};
use crate::util::{assert_contains, assert_lacks};

/// A plain manifest written to a file, then through `kubexit inject`.
fn inject(manifest: &Value) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.json");
    fs::write(&path, manifest.to_string()).unwrap();
    injected(path.to_str().unwrap())
}

/// A container of the alpine stand-in (busybox) running `script` with `sh -c`.
fn shell(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "docker.io/library/alpine:3.20", "command": ["sh", "-c", script]})
}

fn restart_count(pod: &Value, container: &str) -> i64 {
    status_of(pod, container)["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

/// `restartPolicy: OnFailure`: the main container fails once and succeeds
/// when the kubelet starts it again. Its sidecar stays up for the second
/// attempt (restarted never) and is stopped after the last; the Job
/// completes.
#[test]
fn a_job_under_on_failure_keeps_its_sidecar_for_the_retry_and_stops_it_after_the_last() {
    let Some((node, ns)) = scene("lifecycle_on_failure") else {
        return;
    };
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "retry"},
        "spec": {"backoffLimit": 2, "template": {
            "metadata": {"annotations": {"kubexit.io/sidecars": "proxy"}},
            "spec": {
                "restartPolicy": "OnFailure",
                "volumes": [{"name": "state", "emptyDir": {}}],
                "containers": [
                    shell("main", "if [ -e /state/tried ]; then echo second; exit 0; fi; \
                                   touch /state/tried; echo first; exit 1"),
                    shell("proxy", "trap 'exit 0' TERM; echo proxy up; \
                                    while :; do sleep 0.2; done"),
                ],
            },
        }},
    });
    let mut documents = inject(&job);
    documents[0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "state", "mountPath": "/state"}));
    node.create_all(&ns, &documents);
    let pods = node.complete_job(&ns, "retry");
    let (pod, name) = only(&pods);
    assert_eq!(restart_count(pod, "main"), 1, "{}", node.describe(&ns));
    assert_eq!(restart_count(pod, "proxy"), 0, "{}", node.describe(&ns));
    assert_eq!(terminated(pod, "main").0, 0);
    assert_eq!(terminated(pod, "proxy").0, 0);
    // The kubelet keeps no log of the failed attempt once the pod is done.
    assert_contains(&node.logs(&ns, &name, "main", false), "second");
    let proxy = node.logs(&ns, &name, "proxy", false);
    assert_contains(
        &proxy,
        "main ended with status 1, and the kubelet starts it again (restartPolicy OnFailure)",
    );
    assert_eq!(
        proxy.lines().filter(|l| *l == "proxy up").count(),
        1,
        "the proxy's child started more than once:\n{proxy}"
    );
    assert_contains(&proxy, "New death: main");
}

/// A Deployment whose app crashes once: the kubelet starts it again in
/// place, its sidecar keeps running (never restarted, never stopped), and
/// the pod is whole and ready again.
#[test]
fn a_deployments_app_restarted_by_the_kubelet_comes_back_to_a_whole_pod() {
    let Some((node, ns)) = scene("lifecycle_deployment") else {
        return;
    };
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {
                "labels": {"app": "web"},
                "annotations": {"kubexit.io/sidecars": "proxy"},
            },
            "spec": {
                "volumes": [{"name": "state", "emptyDir": {}}],
                "containers": [
                    shell("app", "if [ ! -e /state/crashed ]; then touch /state/crashed; \
                                  echo crash; exit 1; fi; echo serving; \
                                  while :; do sleep 0.2; done"),
                    shell("proxy", "echo proxy up; while :; do sleep 0.2; done"),
                ],
            },
        }},
    });
    let mut documents = inject(&deployment);
    documents[0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "state", "mountPath": "/state"}));
    node.create_all(&ns, &documents);
    let pod = wait_for(
        "the app restarted once and every container running and ready",
        NODE_DEADLINE,
        || {
            let pods = node.pods(&ns, "app=web");
            let pod = pods.first()?.clone();
            let whole = ["app", "proxy"].iter().all(|c| {
                statuses(&pod).iter().any(|status| {
                    status["name"] == *c
                        && status["ready"] == true
                        && status["state"]["running"].is_object()
                })
            });
            (whole && restart_count(&pod, "app") >= 1).then_some(pod)
        },
        || node.describe(&ns),
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(restart_count(&pod, "proxy"), 0, "{}", node.describe(&ns));
    let proxy = node.logs(&ns, name, "proxy", false);
    assert_contains(
        &proxy,
        "app ended with status 1, and the kubelet starts it again (restartPolicy Always)",
    );
    assert_lacks(&proxy, "New death");
    assert_contains(&node.logs(&ns, name, "app", false), "serving");
}

/// The app drains through the proxy for 3 s after its SIGTERM. The kubelet
/// sends SIGTERM to every container of the pod at once: a proxy that takes
/// it at once is gone before the drain, and the drain fails; one whose
/// kubexit holds it until the app has died (`kubexit.io/stop-after`) serves
/// the whole drain, and both are done well within the grace period.
#[test]
fn at_deletion_the_proxy_holds_the_line_until_the_app_has_drained_through_it() {
    let Some((node, ns)) = scene("lifecycle_deletion") else {
        return;
    };
    let evidence = HostDir::new();
    let pod = |name: &str, hold: bool| {
        let mut annotations = json!({"kubexit.io/sidecars": "proxy"});
        if hold {
            annotations["kubexit.io/stop-after.proxy"] = json!("app");
        }
        let dir = format!("/evidence/{name}");
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "terminationGracePeriodSeconds": 15,
                "volumes": [evidence.volume("evidence")],
                "containers": [
                    {
                        "name": "app", "image": "docker.io/library/alpine:3.20",
                        "command": ["sh", "-c", format!(
                            "trap 'for i in 1 2 3 4 5 6; do \
                             wget -q -O- http://127.0.0.1:8080/ >>{dir}/drain 2>/dev/null \
                             || echo failed >>{dir}/drain; sleep 0.5; done; \
                             touch {dir}/drained; exit 0' TERM; \
                             touch {dir}/up; while :; do sleep 0.1; done")],
                        "volumeMounts": [{"name": "evidence", "mountPath": "/evidence"}],
                    },
                    {
                        "name": "proxy", "image": "docker.io/library/nginx:1.27-alpine",
                        "command": ["sh", "-c", format!(
                            "trap 'touch {dir}/proxy-stopped; exit 0' TERM; \
                             httpd -f -p 127.0.0.1:8080 -h /usr/share/nginx/html & wait")],
                        "volumeMounts": [{"name": "evidence", "mountPath": "/evidence"}],
                    },
                ],
            },
        })
    };
    let mut documents = Vec::new();
    for (name, hold) in [("held", true), ("unheld", false)] {
        fs::create_dir(evidence.path().join(name)).unwrap();
        documents.extend(inject(&pod(name, hold)));
    }
    node.create_all(&ns, &documents);
    for name in ["held", "unheld"] {
        wait_for(
            &format!("pod {name} running"),
            NODE_DEADLINE,
            || {
                let up = evidence.path().join(name).join("up").exists();
                let pod = node.pod(&ns, name);
                let running = ["app", "proxy"].iter().all(|c| {
                    statuses(&pod).iter().any(|status| {
                        status["name"] == *c && status["state"]["running"].is_object()
                    })
                });
                (up && running).then_some(())
            },
            || node.describe(&ns),
        );
    }
    let deleted = Instant::now();
    for name in ["held", "unheld"] {
        let (code, body) = node
            .api
            .delete(&format!("/api/v1/namespaces/{ns}/pods/{name}"));
        assert_eq!(code, 200, "delete pod {name}: {body}");
    }
    for name in ["held", "unheld"] {
        wait_for(
            &format!("pod {name} gone"),
            NODE_DEADLINE,
            || {
                (node
                    .api
                    .request("GET", &format!("/api/v1/namespaces/{ns}/pods/{name}"), None)
                    .0
                    == 404)
                    .then_some(())
            },
            || node.describe(&ns),
        );
    }
    let took = deleted.elapsed();
    let read = |name: &str, file: &str| evidence.read(&format!("{name}/{file}"));
    let held = read("held", "drain");
    assert_eq!(
        held.matches("stand-in nginx").count(),
        6,
        "held drain:\n{held}"
    );
    let unheld = read("unheld", "drain");
    assert_contains(&unheld, "failed");
    let modified = |name: &str, file: &str| {
        fs::metadata(evidence.path().join(name).join(file))
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{name}/{file}: {e}"))
    };
    assert!(
        modified("held", "proxy-stopped") >= modified("held", "drained"),
        "the held proxy stopped before the app had drained"
    );
    assert!(
        took < Duration::from_secs(15),
        "the pods took {took:?} to go, past terminationGracePeriodSeconds"
    );
}

/// A native sidecar (an init container with `restartPolicy: Always`,
/// which `kubexit inject` leaves alone) beside a wrapped main container
/// and a wrapped sidecar: kubexit stops its own, the kubelet its own
/// after the main container, and the Job completes.
#[test]
fn native_sidecars_and_kubexits_sidecars_end_together_with_the_main_container() {
    let Some((node, ns)) = scene("lifecycle_native_sidecar") else {
        return;
    };
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "mixed"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"kubexit.io/sidecars": "shipper"}},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [{
                    "name": "native", "image": "docker.io/library/alpine:3.20", "restartPolicy": "Always",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
                }],
                "containers": [
                    shell("main", "echo work; sleep 1"),
                    shell("shipper", "trap 'exit 0' TERM; while :; do sleep 0.2; done"),
                ],
            },
        }},
    });
    let documents = inject(&job);
    let spec = &documents[0]["spec"]["template"]["spec"];
    let native = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "native")
        .unwrap();
    assert_eq!(
        native["command"][0], "sh",
        "kubexit inject changed the native sidecar"
    );
    node.create_all(&ns, &documents);
    let pods = node.complete_job(&ns, "mixed");
    let (pod, name) = only(&pods);
    assert_eq!(terminated(pod, "main").0, 0);
    let (code, message) = terminated(pod, "shipper");
    assert_eq!(code, 0, "{message}");
    assert_contains(&message, "stopped because main died");
    assert_contains(&node.logs(&ns, &name, "main", false), "work");
}
