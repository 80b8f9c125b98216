//! A pod on the real API server (`util/k8s.rs`) for a kubexit in API mode,
//! set up as a cluster would set it up, and nothing more:
//!
//! - a namespace of the test's own, with its `default` ServiceAccount, and
//!   the Role and RoleBinding exactly as `docs/rbac.md` gives them (or not
//!   yet, for a test of 403 Forbidden);
//! - the Pod, stored by the server, whose status the test sets through the
//!   status subresource as the kubelet would (no kubelet runs here);
//! - service account directories laid out as the kubelet mounts them
//!   (`token`, `ca.crt` and `namespace` links into a `..data` directory
//!   that is swapped atomically on rotation), with tokens from the
//!   TokenRequest API, each bound to a Secret of its own so that deleting
//!   the Secret makes the server refuse the token.
//!
//! The pod's status is built from [`Container`] states, shared with the
//! fake server of `util/fake_apiserver.rs`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::util::k8s::{Cluster, cluster};
use crate::util::relay::Relay;
use crate::util::{Kubexit, Yard};

/// The pod's name in every test.
pub const POD: &str = "job-abc";

/// How a container shows up in the pod's status.
#[derive(Clone, Copy, Debug)]
pub enum Container {
    Waiting,
    Running { ready: bool },
    Terminated(i32),
}

pub const NOT_READY: Container = Container::Running { ready: false };
pub const READY: Container = Container::Running { ready: true };

fn container_status(name: &str, container: Container) -> Value {
    let (ready, state) = match container {
        Container::Waiting => (false, json!({"waiting": {"reason": "ContainerCreating"}})),
        Container::Running { ready } => (
            ready,
            json!({"running": {"startedAt": "2026-11-25T10:00:00Z"}}),
        ),
        Container::Terminated(code) => (
            false,
            json!({"terminated": {"exitCode": code, "reason": "Error"}}),
        ),
    };
    json!({"name": name, "ready": ready, "restartCount": 0, "image": "busybox",
           "imageID": "", "state": state})
}

/// Pod `POD` in `namespace` (`restartPolicy: Never`, as a Job's), with
/// these containers and native sidecars (init containers with
/// `restartPolicy: Always`), and the status they report.
pub fn pod(
    namespace: &str,
    containers: &[(&str, Container)],
    sidecars: &[(&str, Container)],
) -> Value {
    let running = containers
        .iter()
        .chain(sidecars)
        .any(|(_, c)| matches!(c, Container::Running { .. }));
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": POD, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": sidecars.iter()
                .map(|(n, _)| json!({"name": n, "image": "busybox", "restartPolicy": "Always"}))
                .collect::<Vec<_>>(),
            "containers": containers.iter().map(|(n, _)| json!({"name": n, "image": "busybox"}))
                .collect::<Vec<_>>(),
        },
        "status": {
            "phase": if running { "Running" } else { "Pending" },
            "initContainerStatuses": sidecars.iter().map(|(n, c)| container_status(n, *c))
                .collect::<Vec<_>>(),
            "containerStatuses": containers.iter().map(|(n, c)| container_status(n, *c))
                .collect::<Vec<_>>(),
        }
    })
}

/// Where kubexit sends its requests: the API server itself, or a relay in
/// front of it.
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The CA that signs the endpoint's certificate.
    pub ca: PathBuf,
}

impl Endpoint {
    pub fn of(relay: &Relay) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: relay.port,
            ca: relay.ca(),
        }
    }
}

/// The scene most API tests begin with: a pod whose `server` and
/// `client` containers run, neither ready yet; a relay in front of the API
/// server, recording kubexit's requests; a service account mount whose
/// server is the relay; and an empty graveyard.
pub struct Waiting {
    pub scene: Scene,
    pub relay: Relay,
    pub account: Account,
    pub yard: Yard,
}

impl Waiting {
    /// The scene, or `None` after saying why `test` is skipped.
    pub fn new(test: &str) -> Option<Waiting> {
        let scene = Scene::new(test)?;
        scene.pod_not_ready();
        let relay = scene.relay();
        let account = scene.account(Endpoint::of(&relay));
        Some(Waiting {
            scene,
            relay,
            account,
            yard: Yard::new(),
        })
    }
}

/// A test's namespace on the real server, and the pod in it.
pub struct Scene {
    pub cluster: &'static Cluster,
    pub namespace: String,
    secrets: AtomicU32,
}

impl Scene {
    /// A namespace whose `default` ServiceAccount may read pods, or `None`
    /// after saying why `test` is skipped.
    pub fn new(test: &str) -> Option<Scene> {
        let scene = Scene::without_rights(test)?;
        scene.grant();
        Some(scene)
    }

    /// A namespace whose `default` ServiceAccount has no rights at all.
    pub fn without_rights(test: &str) -> Option<Scene> {
        let cluster = cluster(test)?;
        // A DNS label: the test's name, shortened, then `-PID-N`.
        let prefix: String = test.replace('_', "-").chars().take(40).collect();
        let namespace = cluster.namespace(prefix.trim_end_matches('-'));
        Some(Scene {
            cluster,
            namespace,
            secrets: AtomicU32::new(0),
        })
    }

    /// Applies the Role and RoleBinding of `docs/rbac.md`, as written.
    pub fn grant(&self) {
        for object in rbac_of_the_docs() {
            let (code, body) = self.cluster.create(&self.namespace, &object, false);
            assert_eq!(code, 201, "create {}: {body}", object["kind"]);
        }
    }

    /// Creates the pod, then sets its status as the kubelet would.
    pub fn create_pod(&self, containers: &[(&str, Container)], sidecars: &[(&str, Container)]) {
        let object = pod(&self.namespace, containers, sidecars);
        let (code, body) = self.cluster.create(&self.namespace, &object, false);
        assert_eq!(code, 201, "create the pod: {body}");
        self.set_status(containers, sidecars);
    }

    /// Creates the pod with its `server` and `client` containers running,
    /// neither ready.
    pub fn pod_not_ready(&self) {
        self.create_pod(&[("server", NOT_READY), ("client", NOT_READY)], &[]);
    }

    /// Replaces the pod's status through the status subresource.
    pub fn set_status(&self, containers: &[(&str, Container)], sidecars: &[(&str, Container)]) {
        let object = pod(&self.namespace, containers, sidecars);
        let path = format!("/api/v1/namespaces/{}/pods/{POD}/status", self.namespace);
        let (code, body) = self.cluster.request("PUT", &path, Some(&object));
        assert_eq!(code, 200, "set the pod's status: {body}");
    }

    /// The API server itself.
    pub fn server(&self) -> Endpoint {
        let authority = self.cluster.url.strip_prefix("https://").expect("https");
        let (host, port) = authority.rsplit_once(':').expect("host:port");
        Endpoint {
            host: host.to_owned(),
            port: port.parse().expect("port"),
            ca: self.cluster.ca.clone(),
        }
    }

    /// A relay in front of the API server, recording kubexit's requests.
    pub fn relay(&self) -> Relay {
        Relay::start(&self.cluster.url, &self.cluster.ca)
    }

    /// A token of the `default` ServiceAccount from the TokenRequest API,
    /// bound to a new Secret: the name of the Secret, and the token.
    pub fn token(&self) -> (String, String) {
        let secret = format!(
            "token-anchor-{}",
            self.secrets.fetch_add(1, Ordering::Relaxed)
        );
        let object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}});
        let (code, created) = self.cluster.create(&self.namespace, &object, false);
        assert_eq!(code, 201, "create Secret {secret}: {created}");
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret,
                                   "uid": created["metadata"]["uid"]},
            },
        });
        let path = format!(
            "/api/v1/namespaces/{}/serviceaccounts/default/token",
            self.namespace
        );
        let (code, answer) = self.cluster.request("POST", &path, Some(&request));
        assert_eq!(code, 201, "TokenRequest: {answer}");
        let token = answer["status"]["token"]
            .as_str()
            .expect("a token")
            .to_owned();
        (secret, token)
    }

    pub fn delete_secret(&self, name: &str) {
        let path = format!("/api/v1/namespaces/{}/secrets/{name}", self.namespace);
        let (code, body) = self.cluster.request("DELETE", &path, None);
        assert_eq!(code, 200, "delete Secret {name}: {body}");
    }

    /// The status the server answers a request with this token (200, or
    /// 401 once it no longer accepts it).
    pub fn status_with(&self, token: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .arg("--cacert")
            .arg(&self.cluster.ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{}/api", self.cluster.url))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a status code")
    }

    /// A service account mount for a kubexit that talks to `endpoint`, with
    /// a fresh token and the namespace of this scene.
    pub fn account(&self, endpoint: Endpoint) -> Account {
        let (secret, token) = self.token();
        let account = Account {
            dir: tempfile::tempdir().expect("temporary directory"),
            endpoint,
            secret,
            generation: AtomicU32::new(0),
        };
        for link in ["token", "ca.crt", "namespace"] {
            symlink(format!("..data/{link}"), account.path().join(link)).unwrap();
        }
        account.publish(&token, &self.namespace);
        account
    }
}

/// A service account mount, as the kubelet lays it out.
pub struct Account {
    dir: tempfile::TempDir,
    endpoint: Endpoint,
    /// The Secret the first token is bound to.
    pub secret: String,
    generation: AtomicU32,
}

impl Account {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Points `kubexit` at the endpoint, with this mount, in API mode for
    /// pod `POD`.
    pub fn configure(&self, kubexit: &mut Kubexit) {
        kubexit
            .env("KUBERNETES_SERVICE_HOST", &self.endpoint.host)
            .env("KUBERNETES_SERVICE_PORT", self.endpoint.port.to_string())
            .env("KUBEXIT_SERVICE_ACCOUNT_DIR", self.path())
            .env("KUBEXIT_POD_NAME", POD);
    }

    /// Replaces the token as the kubelet rotates it: a new data directory,
    /// then `..data` switched to it in one rename.
    pub fn rotate(&self, token: &str) {
        let namespace = fs::read_to_string(self.path().join("namespace")).unwrap();
        self.publish(token, &namespace);
    }

    fn publish(&self, token: &str, namespace: &str) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let data = format!("..2026_11_25_10_00_00.{generation}");
        let dir = self.path().join(&data);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("token"), token).unwrap();
        fs::copy(&self.endpoint.ca, dir.join("ca.crt")).unwrap();
        fs::write(dir.join("namespace"), namespace).unwrap();
        let staged = self.path().join("..data_tmp");
        symlink(&data, &staged).unwrap();
        fs::rename(&staged, self.path().join("..data")).unwrap();
    }
}

/// The Role and RoleBinding of `docs/rbac.md`, parsed from its YAML block.
fn rbac_of_the_docs() -> Vec<Value> {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rbac.md");
    let text = fs::read_to_string(&page).expect("docs/rbac.md");
    let block = text
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in docs/rbac.md");
    let objects: Vec<Value> = serde_saphyr::from_multiple(block).expect("the YAML of docs/rbac.md");
    assert_eq!(
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["Role", "RoleBinding"],
        "docs/rbac.md"
    );
    objects
}
