//! `kubexit.io/install: none` on a real node: images that carry kubexit,
//! so that no init container installs it. The image is built as
//! docs/inject.md says, from the image it replaces (the alpine stand-in)
//! with the static binary copied to `/usr/local/bin/kubexit`, and loaded
//! into the node from an archive; the kubelet and runc find `kubexit` on
//! the image's PATH.

use std::fs;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::{only, scene};
use crate::util::files::target_dir;
use crate::util::node::{Node, statuses, terminated};
use crate::util::{assert_contains, kubexit, podman};

/// The stand-in the image is built from, and the image: the user's image
/// with kubexit copied in.
const BASE: &str = "docker.io/library/alpine:3.20";
const CARRYING: &str = "localhost/alpine-with-kubexit:v1";

/// Builds [`CARRYING`] once per test binary and loads it into the node.
fn carrying_image(node: &Node) -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(|| build_and_load(node)).clone()
}

fn build_and_load(node: &Node) -> Result<(), String> {
    let podman = podman::podman()?;
    let buildah = |args: &[&str]| -> Result<String, String> {
        let done = podman
            .command("buildah")
            .args(args)
            .output()
            .map_err(|e| format!("buildah: {e}"))?;
        if !done.status.success() {
            return Err(format!(
                "buildah {args:?}: {}",
                String::from_utf8_lossy(&done.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&done.stdout).trim().to_owned())
    };
    let binary = target_dir().join("static/kubexit");
    let dir = target_dir().join("node-images");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let archive = dir.join("alpine-with-kubexit.tar");
    let _ = fs::remove_file(&archive);
    let container = buildah(&["from", "--quiet", BASE])?;
    let built = buildah(&[
        "copy",
        "--quiet",
        &container,
        &binary.to_string_lossy(),
        "/usr/local/bin/kubexit",
    ])
    .and_then(|_| {
        buildah(&[
            "commit",
            "--quiet",
            &container,
            &format!("oci-archive:{}:{CARRYING}", archive.display()),
        ])
    });
    let _ = buildah(&["rm", &container]);
    built?;
    node.import(&[archive])
}

/// A Job of a short main and a sidecar that runs until stopped, both in
/// `image`, through `kubexit inject --install none`.
fn job_in(name: &str, image: &str) -> Vec<Value> {
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"kubexit.io/sidecars": "proxy"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "main", "image": image,
                     "command": ["sh", "-c", "echo working; sleep 1; echo done"]},
                    {"name": "proxy", "image": image,
                     "command": ["sh", "-c", "trap 'exit 0' TERM; echo proxy up; \
                                              while :; do sleep 0.2; done"]},
                ],
            },
        }},
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.json");
    fs::write(&path, job.to_string()).unwrap();
    let done = kubexit()
        .args(["inject", "--install", "none", "--output", "json"])
        .arg_path(&path)
        .run();
    assert_eq!(done.code(), 0, "kubexit inject: {}", done.stderr);
    vec![serde_json::from_str(&done.stdout).unwrap()]
}

/// The Job completes: the main container's kubexit, run from the image,
/// records its death, the sidecar's stops it; no init container ran, and
/// the pod has no volume but the graveyard (and the service account's).
#[test]
fn a_job_whose_images_carry_kubexit_completes_with_no_install_container_its_sidecar_stopped() {
    let Some((node, ns)) = scene("install_none") else {
        return;
    };
    carrying_image(node).unwrap_or_else(|why| panic!("the image carrying kubexit: {why}"));
    let documents = job_in("carried", CARRYING);
    let spec = &documents[0]["spec"]["template"]["spec"];
    assert!(spec.get("initContainers").is_none(), "{spec}");
    assert_eq!(spec["containers"][0]["command"][0], "kubexit");
    node.create_all(&ns, &documents);
    let pods = node.complete_job(&ns, "carried");
    let (pod, name) = only(&pods);
    assert!(
        pod["spec"]["initContainers"].is_null() && pod["status"]["initContainerStatuses"].is_null(),
        "an init container ran: {}",
        pod["status"]
    );
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .filter(|v| !v.starts_with("kube-api-access-"))
        .collect();
    assert_eq!(volumes, ["graveyard"], "{}", pod["spec"]);
    let (code, message) = terminated(pod, "main");
    assert_eq!(code, 0, "{message}");
    assert_eq!(
        message,
        "main: the child exited with status 0 (exit status 0)\n"
    );
    let (code, message) = terminated(pod, "proxy");
    assert_eq!(code, 0, "{message}");
    assert!(
        message.starts_with("proxy: stopped because main died"),
        "{message}"
    );
    assert_contains(&node.logs(&ns, &name, "main", false), "done");
    let proxy = node.logs(&ns, &name, "proxy", false);
    assert_contains(&proxy, "proxy up");
    assert_contains(&proxy, "New death: main");
}

/// What docs/inject.md says of an image without kubexit: the container
/// does not start, the runtime says why, and the Job fails.
#[test]
fn with_install_none_an_image_without_kubexit_fails_to_start_saying_so() {
    let Some((node, ns)) = scene("install_none_missing") else {
        return;
    };
    node.create_all(&ns, &job_in("missing", BASE));
    let (ended, pods) = node.finish_job(&ns, "missing");
    assert_eq!(ended, "Failed", "{}", node.describe(&ns));
    let (pod, _) = only(&pods);
    let refused = statuses(pod).into_iter().find(|status| {
        let state = &status["state"]["terminated"];
        state["reason"] == "StartError"
            && state["message"].as_str().is_some_and(|m| {
                m.contains(r#"exec: "kubexit": executable file not found in $PATH"#)
            })
    });
    assert!(refused.is_some(), "{}", node.describe(&ns));
}
