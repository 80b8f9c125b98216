//! The real Kubernetes API server for tests: kube-apiserver and etcd from
//! `../shared/peers/k8s` (see its README). Nothing runs pods there; objects
//! are validated, defaulted, admitted and stored exactly as in a cluster.
//!
//! [`cluster`] finds one, in this order:
//!
//! 1. `KUBEXIT_K8S_ENV` names the `env` file that `k8s/up STATE_DIR` wrote:
//!    `.ci/run` starts one server for the whole run and stops it at exit;
//! 2. otherwise, with `../shared` (or `KUBEXIT_SHARED`), etcd and curl on
//!    the machine, it starts its own, once per test binary, and stops it
//!    when the test binary exits: a guard process holds a pipe from this
//!    process and runs `k8s/down` when the pipe closes, which the kernel
//!    does at any exit, a panic or SIGKILL included;
//! 3. otherwise the test is skipped, saying why (a failure under CI).
//!
//! Requests go through curl with the admin token: the HTTP the tests
//! exercise is the server's, not a client library's.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use crate::util::{shared_dir, skip};

/// One API server, reachable with admin rights.
pub struct Cluster {
    pub url: String,
    pub ca: PathBuf,
    token: String,
}

/// The server this test binary uses, or `None` after saying why the test
/// is skipped.
pub fn cluster(test: &str) -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(find_or_start) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

fn find_or_start() -> Result<Cluster, String> {
    if let Some(env) = std::env::var_os("KUBEXIT_K8S_ENV") {
        return Cluster::from_env_file(Path::new(&env));
    }
    let shared = shared_dir().ok_or(
        "no ../shared beside the checkout (nor KUBEXIT_SHARED): the API server lives in \
         ../shared/peers/k8s",
    )?;
    let up = shared.join("peers/k8s/up");
    let down = shared.join("peers/k8s/down");
    if !up.exists() {
        return Err(format!("{} is missing", up.display()));
    }
    if !Path::new("/usr/bin/etcd").exists() {
        return Err("etcd is not installed: apt-get install etcd-server".into());
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return Err("curl is not installed: apt-get install curl".into());
    }
    let state = tempfile::Builder::new()
        .prefix("kubexit-k8s-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?
        .keep();
    // The guard first, so that even a half-started server is stopped.
    let mut guard = Command::new("bash")
        .args(["-c", r#"read -r _; "$0" "$1" >/dev/null 2>&1; rm -rf "$1""#])
        .arg(&down)
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the guard of the API server: {e}"))?;
    static GUARD: Mutex<Option<ChildStdin>> = Mutex::new(None);
    *GUARD.lock().unwrap() = guard.stdin.take();

    let started = Command::new(&up)
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", up.display()))?;
    if !started.status.success() {
        // Under CI this must fail, not skip: say everything.
        panic!(
            "{} failed ({}):\n{}{}",
            up.display(),
            started.status,
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr)
        );
    }
    Cluster::from_env_file(&state.join("env"))
}

impl Cluster {
    pub fn from_env_file(path: &Path) -> Result<Cluster, String> {
        let text = fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the API server's env file {}: {e}",
                path.display()
            )
        })?;
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let var = |key: &str| {
            vars.get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("{} has no {key}", path.display()))
        };
        let token_file = var("KUBE_ADMIN_TOKEN_FILE")?;
        let token = fs::read_to_string(&token_file)
            .map_err(|e| format!("cannot read {token_file}: {e}"))?
            .trim()
            .to_owned();
        Ok(Cluster {
            url: var("KUBE_URL")?,
            ca: PathBuf::from(var("KUBE_CA")?),
            token,
        })
    }

    /// One request; the status code and the body (JSON, or a string when
    /// it is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "60", "-X", method, "--cacert"])
            .arg(&self.ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json",
            ])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if body.is_some() {
            curl.args(["--data-binary", "@-"]);
        }
        let mut child = curl.spawn().expect("run curl");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(body) = body {
            stdin.write_all(body.to_string().as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {path}: no status ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        (code, body)
    }

    /// A fresh namespace with its `default` ServiceAccount (which pod
    /// admission needs; no controller-manager makes it here).
    pub fn namespace(&self, prefix: &str) -> String {
        self.namespace_labelled(prefix, &json!({}))
    }

    /// A fresh namespace with these labels (a map), and its `default`
    /// ServiceAccount.
    pub fn namespace_labelled(&self, prefix: &str, labels: &Value) -> String {
        let name = unique(prefix);
        let (code, body) = self.request(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            })),
        );
        assert_eq!(code, 201, "create namespace {name}: {body}");
        let (code, body) = self.request(
            "POST",
            &format!("/api/v1/namespaces/{name}/serviceaccounts"),
            Some(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})),
        );
        // A controller-manager (on a real node) may have made it first.
        assert!(
            code == 201 || code == 409,
            "create the default ServiceAccount in {name}: {code} {body}"
        );
        name
    }

    /// Creates `object` in `namespace`; with `dry_run`, only as far as
    /// validation, defaulting and admission, storing nothing. Unknown
    /// fields are errors (`fieldValidation=Strict`), as a typo should be.
    pub fn create(&self, namespace: &str, object: &Value, dry_run: bool) -> (u16, Value) {
        let query = if dry_run {
            "?dryRun=All&fieldValidation=Strict"
        } else {
            "?fieldValidation=Strict"
        };
        self.request(
            "POST",
            &format!("{}{query}", collection(object, namespace)),
            Some(object),
        )
    }

    /// Deletes what is at `path` (under the server's URL).
    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.request("DELETE", path, None)
    }

    pub fn get(&self, namespace: &str, object: &Value) -> (u16, Value) {
        let name = object["metadata"]["name"].as_str().expect("a named object");
        self.request(
            "GET",
            &format!("{}/{name}", collection(object, namespace)),
            None,
        )
    }
}

/// A name no other test (nor another run against the same server) uses:
/// `PREFIX-PID-N`.
pub fn unique(prefix: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The kinds the tests use that belong to no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// The collection an object is created in: `/api/v1/namespaces/NS/pods`,
/// `/apis/batch/v1/namespaces/NS/jobs`, `/api/v1/namespaces` (`namespace`
/// is not used for a kind of no namespace)... (every kind the tests use has
/// the plural `kind` + `s`).
pub fn collection(object: &Value, namespace: &str) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let group = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = format!("{}s", kind.to_ascii_lowercase());
    if CLUSTER_SCOPED.contains(&kind) {
        format!("{group}/{plural}")
    } else {
        format!("{group}/namespaces/{namespace}/{plural}")
    }
}
