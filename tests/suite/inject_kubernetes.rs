//! What `kubexit inject` writes, judged by the real Kubernetes API server
//! (`../shared/peers/k8s`, through `util/k8s.rs`): every injected manifest
//! is accepted by a server-side dry run with strict field validation, and
//! a Pod made from an injected Job template is stored and reads back
//! coordinated, with a record that still undoes the injection after the
//! server's defaulting.

use std::fs;
use std::path::{Path, PathBuf};

use kubexit::inject::{self, manifest};
use serde_json::{Value, json};

use crate::util::{
    files::{fixtures, root},
    k8s, kubexit,
};

fn inject_file(path: &Path) -> Vec<Value> {
    let done = kubexit()
        .args(["inject", "--image", "registry.example/kubexit:test"])
        .arg_path(path)
        .run();
    assert_eq!(done.code(), 0, "{}: {}", path.display(), done.stderr);
    manifest::parse(&done.stdout, &path.display().to_string()).unwrap()
}

/// Every object, the items of lists included.
fn flatten(documents: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for document in documents {
        match document.get("items").and_then(Value::as_array) {
            Some(items) if document["kind"] == "List" => out.extend(flatten(items.clone())),
            _ => out.push(document),
        }
    }
    out
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".injected.yaml")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_injected_manifest_is_accepted_by_the_api_server_dry_run() {
    let test = "every_injected_manifest_is_accepted_by_the_api_server_dry_run";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let namespace = cluster.namespace("inject-dry-run");
    let mut sources = yaml_files(&root().join("examples/plain"));
    sources.extend(yaml_files(&fixtures("inject")));
    let mut accepted = 0;
    for source in &sources {
        for object in flatten(inject_file(source)) {
            let (code, body) = cluster.create(&namespace, &object, true);
            assert_eq!(
                code,
                201,
                "{}: the API server refuses {} {}: {}",
                source.display(),
                object["kind"],
                object["metadata"]["name"],
                body["message"]
            );
            accepted += 1;
        }
    }
    assert!(accepted >= 15, "only {accepted} objects were checked");
}

#[test]
fn a_pod_made_from_an_injected_job_template_reads_back_coordinated() {
    let test = "a_pod_made_from_an_injected_job_template_reads_back_coordinated";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let namespace = cluster.namespace("inject-pod");
    let job = inject_file(&fixtures("inject").join("sidecar-job.yaml")).remove(0);
    let template = &job["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "report-1", "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    });
    let (code, body) = cluster.create(&namespace, &pod, false);
    assert_eq!(code, 201, "create: {}", body["message"]);
    let (code, stored) = cluster.get(&namespace, &pod);
    assert_eq!(code, 200, "read back: {stored}");
    let spec = &stored["spec"];

    let volumes = spec["volumes"].as_array().unwrap();
    let graveyard = volumes
        .iter()
        .find(|v| v["name"] == "graveyard")
        .expect("graveyard volume");
    assert_eq!(graveyard["emptyDir"]["medium"], "Memory");
    assert!(
        volumes.iter().any(|v| v["name"] == "kubexit"),
        "binary volume: {volumes:?}"
    );

    let init = &spec["initContainers"][0];
    assert_eq!(init["name"], "kubexit");
    assert_eq!(
        init["command"],
        json!(["cp", "/bin/kubexit", "/kubexit/kubexit"])
    );

    let containers = spec["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["extract", "load", "proxy"]);
    let var = |container: &Value, name: &str| -> Option<String> {
        container["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    for container in containers {
        let name = container["name"].as_str().unwrap();
        assert_eq!(container["command"][0], "/kubexit/kubexit", "{name}");
        assert_eq!(var(container, "KUBEXIT_NAME").as_deref(), Some(name));
        assert_eq!(
            var(container, "KUBEXIT_GRAVEYARD").as_deref(),
            Some("/graveyard")
        );
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert!(
            mounts.contains(&"/graveyard") && mounts.contains(&"/kubexit"),
            "{name}: {mounts:?}"
        );
    }
    let proxy = &containers[2];
    assert_eq!(
        var(proxy, "KUBEXIT_DEATH_DEPS").as_deref(),
        Some("extract,load")
    );
    assert_eq!(var(proxy, "KUBEXIT_DEATH_POLICY").as_deref(), Some("all"));
    assert_eq!(
        var(&containers[0], "KUBEXIT_BIRTH_DEPS").as_deref(),
        Some("proxy")
    );
    // The user's own fields came through the server unchanged.
    assert_eq!(containers[0]["resources"]["requests"]["cpu"], "100m");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/readiness");

    // The record still undoes the injection on what the server stored,
    // defaults and all.
    let back = inject::uninject(&stored).unwrap();
    // (managedFields, the server's own bookkeeping, still names them.)
    let text = format!("{} {}", back["spec"], back["metadata"]["annotations"]);
    for trace in [
        "/kubexit/kubexit",
        "KUBEXIT_",
        "\"graveyard\"",
        "kubexit.io/injected",
    ] {
        assert!(!text.contains(trace), "{trace} left after uninject: {text}");
    }
    assert_eq!(
        back["spec"]["containers"][2]["command"],
        json!(["/cloud-sql-proxy"])
    );
}

/// The meshes' own outputs (`tests/fixtures/meshes/`), piped through
/// `kubexit inject` as users do after `istioctl kube-inject` or
/// `linkerd inject`: the API server accepts every one, native sidecars
/// included.
#[test]
fn every_mesh_output_injected_is_accepted_by_the_api_server_dry_run() {
    let test = "every_mesh_output_injected_is_accepted_by_the_api_server_dry_run";
    let Some(cluster) = k8s::cluster(test) else {
        return;
    };
    let namespace = cluster.namespace("inject-meshes");
    let outputs = crate::inject_meshes::mesh_outputs();
    assert_eq!(outputs.len(), 4, "{outputs:?}");
    for output in &outputs {
        for mut object in flatten(inject_file(output)) {
            assert!(inject::is_injected(
                object.pointer("/spec/template").unwrap_or(&object)
            ));
            // Linkerd's Pod names its own namespace; the test's is used.
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.shift_remove("namespace");
            }
            let (code, body) = cluster.create(&namespace, &object, true);
            assert_eq!(
                code,
                201,
                "{}: the API server refuses {} {}: {}",
                output.display(),
                object["kind"],
                object["metadata"]["name"],
                body["message"]
            );
        }
    }
}
