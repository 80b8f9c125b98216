//! A proxy nobody wraps, as a mesh injects it, beside main containers
//! whose kubexits ask it to quit: a proxy that listens only after the main
//! has ended. The proxy is the Istio stand-in
//! (`docker.io/istio/proxyv2:1.24.0` of `tests/suite/containers/stand-ins.sh`:
//! readiness on 15021, `POST /quitquitquit` on 15020), slowed down where a
//! test needs a proxy slow to start.

use serde_json::{Value, json};

use super::{Adapt, only, scene};
use crate::util::assert_contains;
use crate::util::node::terminated;

/// A main container that ends at once, with no birth probe, beside a proxy
/// that listens only 2 s after it started: the main's quit is refused at
/// first ("not listening yet"), tried again, and answered once the proxy
/// listens; the proxy ends and the Job completes. (Taking the refusal for
/// "gone" left the proxy running and the Job never completing.)
/// A Job of `mains` (each `(name, command, extra env)`, with kubexit
/// installed by an init container and `KUBEXIT_QUIT=istio`) beside the
/// Istio stand-in, whose own environment is `proxy_env`.
fn mesh_job(mains: &[(&str, Value, Value)], proxy_env: Value) -> Value {
    let mut containers: Vec<Value> = mains
        .iter()
        .map(|(name, command, env)| {
            let mut vars = vec![
                json!({"name": "KUBEXIT_NAME", "value": name}),
                json!({"name": "KUBEXIT_GRAVEYARD", "value": "/graveyard"}),
                json!({"name": "KUBEXIT_QUIT", "value": "istio"}),
            ];
            vars.extend(env.as_array().cloned().unwrap_or_default());
            json!({
                "name": name,
                "image": "docker.io/library/alpine:3.20",
                "command": command,
                "env": vars,
                "volumeMounts": [
                    {"name": "graveyard", "mountPath": "/graveyard"},
                    {"name": "kubexit", "mountPath": "/kubexit"},
                ],
            })
        })
        .collect();
    containers.push(json!({
        "name": "istio-proxy",
        "image": "docker.io/istio/proxyv2:1.24.0",
        "args": ["proxy", "sidecar"],
        "env": proxy_env,
    }));
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "report"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "graveyard", "emptyDir": {"medium": "Memory"}},
                {"name": "kubexit", "emptyDir": {}},
            ],
            "initContainers": [{
                "name": "kubexit",
                "image": "ghcr.io/kubexit/kubexit:latest",
                "command": ["cp", "/bin/kubexit", "/kubexit/kubexit"],
                "volumeMounts": [{"name": "kubexit", "mountPath": "/kubexit"}],
            }],
            "containers": containers,
        }}},
    })
}

/// A main container that ends at once, with no birth probe, beside a proxy
/// that listens only 2 s after it started: the main's quit is refused at
/// first ("not listening yet"), tried again, and answered once the proxy
/// listens; the proxy ends and the Job completes. (Taking the refusal for
/// "gone" left the proxy running and the Job never completing.)
#[test]
fn a_job_whose_main_ends_before_the_proxy_listens_still_quits_it_and_completes() {
    let Some((node, ns)) = scene("meshes_late_proxy") else {
        return;
    };
    let job = mesh_job(
        &[(
            "report",
            json!(["/kubexit/kubexit", "echo", "report done"]),
            json!([]),
        )],
        json!([{"name": "STAND_IN_START_DELAY", "value": "2"}]),
    );
    node.create_all(&ns, &Adapt::default().apply(vec![job]));
    let pods = node.complete_job(&ns, "report");
    let (pod, name) = only(&pods);
    let (code, message) = terminated(pod, "report");
    assert_eq!(code, 0, "{message}");
    assert_eq!(terminated(pod, "istio-proxy").0, 0);
    let report = node.logs(&ns, &name, "report", false);
    assert_contains(&report, "report done");
    assert_contains(
        &report,
        "Quit http://127.0.0.1:15020/quitquitquit: connection refused, not listening yet; \
         trying again until the quit timeout (10s) has passed",
    );
    assert_contains(
        &report,
        "Quit http://127.0.0.1:15020/quitquitquit: HTTP 200",
    );
    let proxy = node.logs(&ns, &name, "istio-proxy", false);
    assert_contains(&proxy, "pilot-agent (stand-in): starting in 2s");
    assert_contains(&proxy, "pilot-agent (stand-in): quitquitquit");
}
