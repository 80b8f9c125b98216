//! kubexit on a real node (`util::node`): pods run by a kubelet, Jobs
//! completed by the Job controller, pods restarted in place, deleted with
//! the kubelet's SIGTERM to every container at once, admitted through the
//! webhook deployed in the cluster. What a stand-in that sets pod status by
//! hand cannot show is shown here.
//!
//! - `examples`: every manifest of `examples/` run to its documented end,
//!   and the plain ones through `kubexit inject`;
//! - `lifecycle`: deletion (holding the line with `stop-after`), restarts
//!   in place (a Job under `OnFailure`, a Deployment's app), native
//!   sidecars beside wrapped containers;
//! - `install`: `kubexit.io/install: none`, a Job whose images carry
//!   kubexit, with no init container to install it;
//! - `webhook`: the webhook deployed from `deploy/webhook/`, the Job
//!   controller's pods sent to it, `failurePolicy: Fail` with it down, and
//!   its own pods never sent to it.
//!
//! Each test has a namespace of its own, so tests run side by side on the
//! node; those whose pods use the host's network take
//! [`node::host_network`] first. Where a manifest must differ from what
//! users apply, the test says what it adapts and why, in one place
//! ([`Adapt`]): images come from archives (the examples' `:latest` would
//! be pulled, and no registry is reachable), there is no DNS, and API
//! clients and httpGet probes need the host's network on this node.

mod examples;
mod install;
mod lifecycle;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::ops::Deref;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::files::root;
use crate::util::node::{self, HostDir, Node};

/// The documents of a manifest of the repository.
fn manifest(path: &str) -> Vec<Value> {
    let text = fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    kubexit::inject::manifest::parse(&text, path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a manifest, through `kubexit inject` (the binary under
/// test), with the image it installs kubexit from by default.
fn injected(path: &str) -> Vec<Value> {
    let done = crate::util::kubexit()
        .args(["inject", "--output", "json"])
        .arg_path(&root().join(path))
        .run();
    assert_eq!(done.code(), 0, "kubexit inject {path}: {}", done.stderr);
    serde_json::Deserializer::from_str(&done.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("kubexit inject {path} --output json: {e}\n{}", done.stdout))
}

/// What a test changes in a manifest before it applies it, each change
/// said where it is asked for.
#[derive(Default)]
struct Adapt<'a> {
    /// The `graveyard` volume becomes this directory of the node, so that
    /// the tombstones outlive the pod (the kubelet removes an `emptyDir`'s
    /// files once the pod has ended).
    graveyard: Option<&'a HostDir>,
    /// The pod uses the host's network: on this node, pods on the bridge
    /// cannot reach the API server, and the kubelet's httpGet and
    /// tcpSocket probes reach only pods on the host's network.
    host_network: bool,
    /// Secrets the manifest mounts, made empty (the stand-ins read no
    /// credentials).
    secrets: &'a [&'a str],
}

impl Adapt<'_> {
    /// The manifest's documents, adapted; every pod template's images named
    /// as the node has them.
    fn apply(&self, mut documents: Vec<Value>) -> Vec<Value> {
        let images = BTreeMap::from([
            (
                "ghcr.io/kubexit/kubexit:latest".to_owned(),
                node::kubexit_image(),
            ),
            (
                "ghcr.io/kubexit/kubexit:scratch".to_owned(),
                node::kubexit_scratch_image(),
            ),
        ]);
        for document in &mut documents {
            let Some(template) = template_of(document) else {
                continue;
            };
            node::rename_images(template, &images);
            if let Some(dir) = self.graveyard {
                for volume in template["spec"]["volumes"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if volume["name"] == "graveyard" {
                        *volume = dir.volume("graveyard");
                    }
                }
            }
            if self.host_network {
                template["spec"]["hostNetwork"] = json!(true);
            }
        }
        for secret in self.secrets {
            documents.insert(
                0,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}}),
            );
        }
        documents
    }
}

/// The pod template of a Job or Deployment, or the pod itself.
fn template_of(document: &mut Value) -> Option<&mut Value> {
    match document["kind"].as_str()? {
        "Pod" => Some(document),
        "Job" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            Some(&mut document["spec"]["template"])
        }
        _ => None,
    }
}

/// The container of a document's pod template named `name`.
fn container<'a>(document: &'a mut Value, name: &str) -> &'a mut Value {
    let template = template_of(document).expect("a pod template");
    template["spec"]["containers"]
        .as_array_mut()
        .and_then(|all| all.iter_mut().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The node, and a namespace of this test's.
fn scene(test: &str) -> Option<(&'static Node, Namespace)> {
    let node = node::node(test)?;
    let name = node.namespace(test, &json!({}));
    Some((
        node,
        Namespace {
            node,
            name,
            host: None,
        },
    ))
}

/// Like [`scene`], for a test whose pods use the host's network: it holds
/// [`node::host_network`] until its pods are gone.
fn scene_on_host(test: &str) -> Option<(&'static Node, Namespace)> {
    let node = node::node(test)?;
    let host = node::host_network();
    let name = node.namespace(test, &json!({}));
    Some((
        node,
        Namespace {
            node,
            name,
            host: Some(host),
        },
    ))
}

/// A test's namespace, deleted with everything in it when the test ends,
/// passed or failed, so that nothing it started runs on into other tests.
struct Namespace {
    node: &'static Node,
    name: String,
    host: Option<MutexGuard<'static, ()>>,
}

impl Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.node.delete_namespace(&self.name);
        if self.host.is_some() {
            // The host's ports are free again only once the pods are gone.
            let start = Instant::now();
            while !self.node.pods(&self.name, "").is_empty()
                && start.elapsed() < node::NODE_DEADLINE
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// The one pod of a Job's pods, with its name.
fn only(pods: &[Value]) -> (&Value, String) {
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod = &pods[0];
    (pod, pod["metadata"]["name"].as_str().unwrap().to_owned())
}
