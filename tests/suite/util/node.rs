//! A real Kubernetes node for tests: the single-node cluster of
//! `../shared/peers/cluster` (its README says what it does and does not
//! do): etcd, the API server, the controller-manager, the scheduler,
//! containerd with runc, and a kubelet that runs the pods. What a kubelet
//! alone shows (restarts in place, the SIGTERM of a deletion, probes, the
//! Job controller's pods, admission of the pods it creates) is tested here.
//!
//! [`node`] finds one, in this order:
//!
//! 1. `KUBEXIT_NODE_ENV` names the `env` file that `cluster/up STATE_DIR`
//!    wrote: `.ci/run` starts one node for the whole run and stops it at
//!    exit;
//! 2. otherwise, as root with `../shared` (or `KUBEXIT_SHARED`), it starts
//!    its own, once per test binary, and stops it when the test binary
//!    exits, by the guard process of [`super::k8s`]'s kind;
//! 3. otherwise the test is skipped, saying why (a failure under CI).
//!
//! The images come from archives only (no registry is reachable): once per
//! run, kubexit's own, built from the static binary by
//! `scripts/build-images.sh` and named as published
//! (`ghcr.io/kubexit/kubexit:VERSION` and `:VERSION-scratch`), and the
//! stand-ins of `tests/suite/containers/stand-ins.sh` under the names of
//! the real images, all built in the store of [`super::podman`], pushed to
//! OCI archives and imported with `cluster/images`.
//!
//! Requests go through [`Cluster`] (curl with the admin token). Waits are
//! on conditions, with deadlines: a Job's phases each take about a second
//! to show in its status on this node.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::files::target_dir;
use super::k8s::Cluster;
use super::{is_root, podman, shared_dir, skip};

/// How long a Job or a pod of these tests may take to reach the state a
/// test waits for. Generous: on a loaded 2-core machine a Job takes 5 to
/// 10 s; a passing test never waits this long.
pub const NODE_DEADLINE: Duration = Duration::from_secs(180);

/// The images the tests' pods run, besides the node's own
/// (`localhost/busybox:v1`, `registry.k8s.io/pause:3.9`): kubexit's, and
/// the stand-ins, by the names the manifests give.
const STAND_INS: &[&str] = &[
    "docker.io/curlimages/curl:8.10.1",
    "docker.io/curlimages/curl:8.11.0",
    "docker.io/library/nginx:1.27-alpine",
    "docker.io/library/alpine:3.20",
    "gcr.io/cloudsql-docker/gce-proxy:1.33.2",
    "docker.io/library/postgres:16-alpine",
    "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.13.0",
    "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1",
    "docker.io/migrate/migrate:v4.17.1",
    "docker.io/istio/proxyv2:1.24.0",
];

/// One node, its API server reachable with admin rights.
pub struct Node {
    pub api: Cluster,
    /// `cluster/up`'s state directory: logs, the kubelet's root.
    pub state: PathBuf,
}

/// The node this test binary uses, its images loaded, or `None` after
/// saying why the test is skipped.
pub fn node(test: &str) -> Option<&'static Node> {
    static NODE: OnceLock<Result<Node, String>> = OnceLock::new();
    match NODE.get_or_init(|| find_or_start().and_then(load_images)) {
        Ok(node) => Some(node),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// kubexit's image, as `kubexit inject` names it by default.
pub fn kubexit_image() -> String {
    format!("ghcr.io/kubexit/kubexit:{}", env!("CARGO_PKG_VERSION"))
}

/// kubexit's image with nothing but the binary.
pub fn kubexit_scratch_image() -> String {
    format!("{}-scratch", kubexit_image())
}

fn find_or_start() -> Result<Node, String> {
    if let Some(env) = std::env::var_os("KUBEXIT_NODE_ENV") {
        return Node::from_env_file(Path::new(&env));
    }
    let shared = shared_dir().ok_or(
        "no ../shared beside the checkout (nor KUBEXIT_SHARED): the node lives in \
         ../shared/peers/cluster",
    )?;
    if !is_root() {
        return Err("a node (kubelet, containerd) needs root; CI runs as root".into());
    }
    let up = shared.join("peers/cluster/up");
    let down = shared.join("peers/cluster/down");
    // Short: the node's sockets live under it.
    let state = tempfile::Builder::new()
        .prefix("kx-node-")
        .tempdir_in("/tmp")
        .map_err(|e| format!("temporary directory: {e}"))?
        .keep();
    let mut guard = Command::new("bash")
        .args(["-c", r#"read -r _; "$0" "$1" >/dev/null 2>&1; rm -rf "$1""#])
        .arg(&down)
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the guard of the node: {e}"))?;
    static GUARD: Mutex<Option<ChildStdin>> = Mutex::new(None);
    *GUARD.lock().unwrap() = guard.stdin.take();
    let started = Command::new(&up)
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", up.display()))?;
    if !started.status.success() {
        panic!(
            "{} failed ({}):\n{}{}",
            up.display(),
            started.status,
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr)
        );
    }
    Node::from_env_file(&state.join("env"))
}

/// Builds the images in podman's store (kubexit's from the static binary,
/// the stand-ins), writes each to an OCI archive under its name, and
/// imports them all into the node.
fn load_images(node: Node) -> Result<Node, String> {
    let podman = podman::podman()?;
    let dir = target_dir().join("node-images");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut images: Vec<(String, String)> = vec![
        ("localhost/kubexit:latest".into(), kubexit_image()),
        ("localhost/kubexit:scratch".into(), kubexit_scratch_image()),
    ];
    images.extend(STAND_INS.iter().map(|n| (n.to_string(), n.to_string())));
    let mut archives = Vec::new();
    for (built, named) in &images {
        let archive = dir.join(format!("{}.tar", named.replace(['/', ':'], "_")));
        let _ = fs::remove_file(&archive);
        let target = format!("oci-archive:{}:{named}", archive.display());
        let pushed = podman
            .command("buildah")
            .args(["push", "--quiet", built, &target])
            .output()
            .map_err(|e| format!("buildah push: {e}"))?;
        if !pushed.status.success() {
            return Err(format!(
                "buildah push {built} {target}: {}",
                String::from_utf8_lossy(&pushed.stderr)
            ));
        }
        archives.push(archive);
    }
    node.import(&archives)?;
    Ok(node)
}

/// Held by a test whose pods use the host's network (`hostNetwork`, which
/// in-cluster API clients and the kubelet's httpGet probes need on this
/// node): they share the host's ports, so they run one at a time.
pub fn host_network() -> MutexGuard<'static, ()> {
    static HOST: Mutex<()> = Mutex::new(());
    HOST.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `condition` every 200 ms until it gives a value or `deadline`
/// passes; then panics, saying `what` and `context()`.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}",
                context()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

impl Node {
    fn from_env_file(path: &Path) -> Result<Node, String> {
        let api = Cluster::from_env_file(path)?;
        let state = path
            .parent()
            .ok_or_else(|| format!("{}: no state directory", path.display()))?
            .to_owned();
        Ok(Node { api, state })
    }

    /// Imports OCI archives into the node's containerd, under the names
    /// they carry (`cluster/images`).
    pub fn import(&self, archives: &[PathBuf]) -> Result<(), String> {
        let shared = shared_dir().ok_or("no ../shared")?;
        let imported = Command::new(shared.join("peers/cluster/images"))
            .arg(&self.state)
            .args(archives)
            .output()
            .map_err(|e| format!("cluster/images: {e}"))?;
        if !imported.status.success() {
            return Err(format!(
                "cluster/images: {}",
                String::from_utf8_lossy(&imported.stderr)
            ));
        }
        Ok(())
    }

    /// A fresh namespace, `PREFIX-PID-N`, with these labels and its
    /// `default` ServiceAccount, which pods need.
    pub fn namespace(&self, prefix: &str, labels: &Value) -> String {
        let prefix: String = prefix.replace('_', "-").chars().take(30).collect();
        self.api
            .namespace_labelled(prefix.trim_end_matches('-'), labels)
    }

    /// Creates every object in `namespace`, failing on the first refusal.
    pub fn create_all(&self, namespace: &str, objects: &[Value]) {
        for object in objects {
            let (code, body) = self.api.create(namespace, object, false);
            assert_eq!(
                code, 201,
                "create {} {}: {body}",
                object["kind"], object["metadata"]["name"]
            );
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let (code, body) = self.api.request("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    pub fn job(&self, namespace: &str, name: &str) -> Value {
        self.get(&format!(
            "/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        ))
    }

    /// The pods of a namespace (of a Job, with `job-name=JOB` as `selector`).
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        let list = self.get(&format!(
            "/api/v1/namespaces/{namespace}/pods?labelSelector={}",
            selector.replace('=', "%3D").replace(',', "%2C")
        ));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the Job has ended (condition `Complete` or `Failed`),
    /// and returns which, with the Job's pods.
    pub fn finish_job(&self, namespace: &str, name: &str) -> (String, Vec<Value>) {
        let ended = wait_for(
            &format!("Job {namespace}/{name} to end"),
            NODE_DEADLINE,
            || {
                self.refuse_image_pulls(namespace);
                job_ended(&self.job(namespace, name))
            },
            || self.describe(namespace),
        );
        (ended, self.pods(namespace, &format!("job-name={name}")))
    }

    /// Waits until the Job is Complete; fails, with what the node knows
    /// of the namespace, if it fails or times out.
    pub fn complete_job(&self, namespace: &str, name: &str) -> Vec<Value> {
        let (ended, pods) = self.finish_job(namespace, name);
        assert_eq!(ended, "Complete", "{}", self.describe(namespace));
        pods
    }

    /// Fails at once when a pod waits for an image the node does not have:
    /// nothing can pull it here, and waiting would only reach the deadline.
    pub fn refuse_image_pulls(&self, namespace: &str) {
        for pod in self.pods(namespace, "") {
            for status in statuses(&pod) {
                let reason = status["state"]["waiting"]["reason"]
                    .as_str()
                    .unwrap_or_default();
                if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
                    panic!(
                        "{} waits for image {} ({reason}): the node has only the images \
                         util::node loads\n{}",
                        status["name"],
                        status["image"],
                        self.describe(namespace)
                    );
                }
            }
        }
    }

    /// The log of `container` of `pod` (its last run, or the one before
    /// with `previous`).
    pub fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> String {
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}&previous={previous}"
        );
        match self.api.request("GET", &path, None) {
            (200, Value::String(text)) => text,
            (200, other) => other.to_string(),
            (code, body) => format!("(no log: {code} {body})"),
        }
    }

    /// The pod as it is now.
    pub fn pod(&self, namespace: &str, name: &str) -> Value {
        self.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))
    }

    /// Everything a failing test should show: each pod's phase and
    /// container states, each container's log, and the namespace's events.
    pub fn describe(&self, namespace: &str) -> String {
        let mut out = String::new();
        for pod in self.pods(namespace, "") {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            out.push_str(&format!(
                "--- pod {name}: {}\n",
                pod["status"]["phase"].as_str().unwrap_or("?")
            ));
            for status in statuses(&pod) {
                let container = status["name"].as_str().unwrap_or_default();
                out.push_str(&format!(
                    "  {container}: restarts {} state {}\n",
                    status["restartCount"], status["state"]
                ));
                for line in self.logs(namespace, name, container, false).lines() {
                    out.push_str(&format!("    | {line}\n"));
                }
            }
        }
        let events = self.get(&format!("/api/v1/namespaces/{namespace}/events"));
        for event in events["items"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "event {} {}: {}\n",
                event["involvedObject"]["name"].as_str().unwrap_or_default(),
                event["reason"].as_str().unwrap_or_default(),
                event["message"].as_str().unwrap_or_default()
            ));
        }
        out
    }

    /// Deletes a namespace and what is in it (without waiting).
    pub fn delete_namespace(&self, namespace: &str) {
        let _ = self.api.delete(&format!("/api/v1/namespaces/{namespace}"));
    }
}

/// `Complete` or `Failed` once the Job has one of those conditions true.
pub fn job_ended(job: &Value) -> Option<String> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"))
        .and_then(|c| c["type"].as_str())
        .map(str::to_owned)
}

/// The statuses of every container of the pod, init containers first.
pub fn statuses(pod: &Value) -> Vec<Value> {
    let status = &pod["status"];
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|key| status[*key].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The status of one container of the pod.
pub fn status_of(pod: &Value, container: &str) -> Value {
    statuses(pod)
        .into_iter()
        .find(|s| s["name"] == container)
        .unwrap_or_else(|| panic!("no status of container {container} in {}", pod["status"]))
}

/// How a container ended: its exit code and its termination message.
pub fn terminated(pod: &Value, container: &str) -> (i64, String) {
    let state = &status_of(pod, container)["state"]["terminated"];
    let code = state["exitCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("{container} has not terminated: {}", pod["status"]));
    (
        code,
        state["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A directory on the node that pods mount by `hostPath` (the node is this
/// machine): what kubexit leaves in a graveyard there outlives the pod,
/// where an `emptyDir`'s files go with it.
pub struct HostDir {
    dir: tempfile::TempDir,
}

impl HostDir {
    pub fn new() -> HostDir {
        HostDir {
            dir: tempfile::Builder::new()
                .prefix("kx-host-")
                .tempdir_in("/tmp")
                .expect("a host directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The volume, named `name`, that mounts it.
    pub fn volume(&self, name: &str) -> Value {
        json!({"name": name, "hostPath": {"path": self.dir.path(), "type": "Directory"}})
    }
}

impl Default for HostDir {
    fn default() -> Self {
        HostDir::new()
    }
}

/// Replaces the images of every container (init containers too) named in
/// `names` as their keys by their values.
pub fn rename_images(template: &mut Value, names: &BTreeMap<String, String>) {
    for key in ["initContainers", "containers"] {
        for container in template["spec"][key].as_array_mut().into_iter().flatten() {
            if let Some(image) = container["image"].as_str()
                && let Some(renamed) = names.get(image)
            {
                container["image"] = Value::String(renamed.clone());
            }
        }
    }
}
