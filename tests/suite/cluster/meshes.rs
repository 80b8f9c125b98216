//! A proxy nobody wraps, as a mesh injects it, beside main containers
//! whose kubexits ask it to quit: a proxy that listens only after the main
//! has ended, a proxy shared by two mains, asked by the last one out, and
//! an Istio-shaped Job through `kubexit inject` with no `kubexit.io/`
//! annotation at all, coordinated from Istio's own record. The proxy is
//! the Istio stand-in (`docker.io/istio/proxyv2:1.24.0` of
//! `tests/suite/containers/stand-ins.sh`: readiness on 15021,
//! `POST /quitquitquit` on 15020), slowed down where a test needs a proxy
//! slow to start.

use serde_json::{Value, json};

use super::{Adapt, only, scene};
use crate::util::node::terminated;
use crate::util::{assert_contains, assert_lacks};

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

/// Two main containers share the proxy, each naming the other in
/// `KUBEXIT_QUIT_AFTER`: the first to end leaves the quit to the other,
/// which still reads a page through the proxy and asks once it ends; the
/// proxy ends then, and the Job completes. (Asked by the first, the proxy
/// was gone before the second's read, and the Job failed.)
#[test]
fn two_mains_sharing_the_proxy_leave_its_quit_to_the_last_one_out() {
    let Some((node, ns)) = scene("meshes_two_mains") else {
        return;
    };
    let after = |other: &str| json!([{"name": "KUBEXIT_QUIT_AFTER", "value": other}]);
    let job = mesh_job(
        &[
            (
                "migrate",
                json!(["/kubexit/kubexit", "sh", "-c", "sleep 1; echo migrated"]),
                after("report"),
            ),
            (
                "report",
                json!([
                    "/kubexit/kubexit",
                    "sh",
                    "-c",
                    "sleep 4; wget -q -O - http://127.0.0.1:15021/run",
                ]),
                after("migrate"),
            ),
        ],
        json!([]),
    );
    node.create_all(&ns, &Adapt::default().apply(vec![job]));
    let pods = node.complete_job(&ns, "report");
    let (pod, name) = only(&pods);
    for main in ["migrate", "report", "istio-proxy"] {
        let (code, message) = terminated(pod, main);
        assert_eq!(code, 0, "{main}: {message}");
    }
    let migrate = node.logs(&ns, &name, "migrate", false);
    assert_contains(
        &migrate,
        "Quit http://127.0.0.1:15020/quitquitquit: left to report, which uses it too and has \
         not ended",
    );
    assert_lacks(&migrate, "HTTP 200");
    let report = node.logs(&ns, &name, "report", false);
    // Through the proxy, after migrate had ended.
    assert_contains(&report, "report run (stand-in)");
    assert_contains(
        &report,
        "Quit http://127.0.0.1:15020/quitquitquit: HTTP 200",
    );
    let proxy = node.logs(&ns, &name, "istio-proxy", false);
    assert_eq!(
        proxy
            .matches("pilot-agent (stand-in): quitquitquit")
            .count(),
        1,
        "{proxy}"
    );
}

/// A Job shaped as `istioctl kube-inject` writes it (Istio's status
/// annotation naming `istio-proxy`, the proxy a regular container started
/// with `proxy sidecar`), but with the stand-in for the proxy, slow to
/// listen, and no `kubexit.io/` annotation: `kubexit inject` recognises
/// the proxy, leaves it alone, and gives the main its readiness to wait
/// for and its quit; the Job completes.
#[test]
fn an_istio_job_through_kubexit_inject_untold_waits_for_the_proxy_and_quits_it() {
    let Some((node, ns)) = scene("meshes_istio_injected") else {
        return;
    };
    let status = r#"{"initContainers":null,"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#;
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"sidecar.istio.io/status": status}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "pi",
                        "image": "docker.io/library/alpine:3.20",
                        "command": ["wget", "-q", "-O", "-", "http://127.0.0.1:15021/run"],
                    },
                    {
                        "name": "istio-proxy",
                        "image": "docker.io/istio/proxyv2:1.24.0",
                        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                        "env": [{"name": "STAND_IN_START_DELAY", "value": "2"}],
                        "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}],
                    },
                ],
                "volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}],
            },
        }},
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let done = crate::util::kubexit()
        .args(["inject", "--output", "json", "-f"])
        .arg_path(&path)
        .run();
    assert_eq!(done.code(), 0, "kubexit inject: {}", done.stderr);
    let mut injected: Value = serde_json::from_str(&done.stdout).unwrap();
    let annotations = injected["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap();
    let ours: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with("kubexit.io/"))
        .collect();
    assert_eq!(
        ours,
        ["kubexit.io/injected"],
        "only the record of the injection"
    );
    let proxy = injected["spec"]["template"]["spec"]["containers"][1].take();
    assert_eq!(proxy, job["spec"]["template"]["spec"]["containers"][1]);
    injected["spec"]["template"]["spec"]["containers"][1] = proxy;
    node.create_all(&ns, &Adapt::default().apply(vec![injected]));
    let pods = node.complete_job(&ns, "pi");
    let (pod, name) = only(&pods);
    for container in ["pi", "istio-proxy"] {
        let (code, message) = terminated(pod, container);
        assert_eq!(code, 0, "{container}: {message}");
    }
    let pi = node.logs(&ns, &name, "pi", false);
    // It waited for the proxy's readiness, read through it, then asked it
    // to quit.
    assert_contains(&pi, "Birth dependencies ready");
    assert_contains(&pi, "report run (stand-in)");
    assert_contains(&pi, "Quit http://127.0.0.1:15020/quitquitquit: HTTP 200");
    assert_lacks(&pi, "not listening yet");
    let proxy = node.logs(&ns, &name, "istio-proxy", false);
    assert_contains(&proxy, "pilot-agent (stand-in): quitquitquit");
}
