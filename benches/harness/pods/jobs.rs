//! The Jobs measured: one short main container, `sleep 2`, alone or beside
//! a sidecar that runs until it is stopped, in five ways. Each is a Job as
//! its users would write it; the three with kubexit are made from the same
//! plain Job by `kubexit inject` (the binary measured), so that they are
//! what the injection writes, not a hand-made likeness.
//!
//! - (a) **plain**: the main container alone, the floor of a Job's time;
//! - (b) **native**: the sidecar as a native sidecar (an init container
//!   with `restartPolicy: Always`), which the kubelet stops after the main
//!   container has ended;
//! - (c) **kubexit, installed**: `kubexit.io/sidecars: sidecar`, kubexit
//!   copied into the pod by the install init container (`install: cp`,
//!   the default) from an image holding it at `/bin/kubexit`;
//! - (c') **kubexit in the images**: the same with `install: none`, both
//!   containers' images carrying kubexit on their PATH;
//! - (d) **Go**: (c) with the install image holding upstream's Go kubexit
//!   at `/bin/kubexit` instead, as upstream's README installs it; the
//!   variables the injection writes for this Job are all Go's own (checked).
//!
//! The sidecar is `sleep 3600`, which SIGTERM ends at once, as it ends most
//! programs that do not handle it: kubexit and the Go kubexit signal it as
//! their child. A native sidecar is its container's PID 1, which ignores a
//! signal it has no handler for, so there it is a shell that exits 0 at
//! SIGTERM at once. No way waits for a sidecar slow to stop; how each
//! supervisor ends after its child died of the signal is its own (kubexit
//! exits 0, `KUBEXIT_STOPPED_EXIT_CODE`; the Go kubexit 255).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::programs::without_kubexit_env;

/// The node's own busybox image (`cluster/up` imports it): every
/// container's image, unless it must carry kubexit.
pub const BASE_IMAGE: &str = "localhost/busybox:v1";
/// [`BASE_IMAGE`] with kubexit at `/bin/kubexit` (on its PATH, `/bin`):
/// the install image of (c), as kubexit's own image is built, and the
/// image carrying kubexit of (c').
pub const KUBEXIT_IMAGE: &str = "localhost/busybox-kubexit:v1";
/// [`BASE_IMAGE`] with the Go kubexit at `/bin/kubexit`: the install image
/// of (d).
pub const GO_IMAGE: &str = "localhost/busybox-kubexit-go:v1";

/// The main container's command: a short job of known length.
pub const MAIN: [&str; 2] = ["sleep", "2"];
/// The sidecar's: runs until SIGTERM ends it.
const SIDECAR: [&str; 2] = ["sleep", "3600"];
/// The native sidecar's, as its container's PID 1: exits 0 at SIGTERM.
const NATIVE_SIDECAR: [&str; 3] = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

/// The variables upstream's Go kubexit reads (`../shared/peers/README.md`).
const GO_VARIABLES: &[&str] = &[
    "KUBEXIT_NAME",
    "KUBEXIT_GRAVEYARD",
    "KUBEXIT_DEATH_DEPS",
    "KUBEXIT_GRACE_PERIOD",
    "KUBEXIT_BIRTH_DEPS",
    "KUBEXIT_BIRTH_TIMEOUT",
    "KUBEXIT_POD_NAME",
    "KUBEXIT_NAMESPACE",
];

/// One way of running the Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    Native,
    Installed,
    InImage,
    Go,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Plain,
        Variant::Native,
        Variant::Installed,
        Variant::InImage,
        Variant::Go,
    ];

    /// The letter of the list: a, b, c, c', d.
    pub fn letter(self) -> &'static str {
        match self {
            Variant::Plain => "a",
            Variant::Native => "b",
            Variant::Installed => "c",
            Variant::InImage => "c'",
            Variant::Go => "d",
        }
    }

    /// For JSON, and in the Jobs' names.
    pub fn key(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Native => "native",
            Variant::Installed => "kubexit-installed",
            Variant::InImage => "kubexit-in-image",
            Variant::Go => "go-installed",
        }
    }

    /// For the tables.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Plain => "main alone",
            Variant::Native => "main + native sidecar",
            Variant::Installed => "main + kubexit sidecar, install init container",
            Variant::InImage => "main + kubexit sidecar, kubexit in the images",
            Variant::Go => "main + Go kubexit sidecar, install init container",
        }
    }
}

fn container(name: &str, image: &str, command: &[&str]) -> Value {
    json!({"name": name, "image": image, "command": command})
}

/// A Job of `containers` (and `init` containers), never retried: a failed
/// pod ends the Job Failed.
fn job(name: &str, init: Vec<Value>, containers: Vec<Value>, annotations: Value) -> Value {
    let mut spec = json!({"restartPolicy": "Never", "containers": containers});
    if !init.is_empty() {
        spec["initContainers"] = Value::Array(init);
    }
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"kubexit-bench": "pods"}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": annotations},
            "spec": spec,
        }},
    })
}

/// The Job of `variant`, named `name`; the kubexit variants through
/// `kubexit inject`, run from `kubexit`.
pub fn of(variant: Variant, name: &str, kubexit: &Path) -> Result<Value, String> {
    let main = || container("main", BASE_IMAGE, &MAIN);
    let sidecar = |image: &str| container("sidecar", image, &SIDECAR);
    let sidecars = json!({"kubexit.io/sidecars": "sidecar"});
    match variant {
        Variant::Plain => Ok(job(name, Vec::new(), vec![main()], json!({}))),
        Variant::Native => {
            let mut native = container("sidecar", BASE_IMAGE, &NATIVE_SIDECAR);
            native["restartPolicy"] = json!("Always");
            Ok(job(name, vec![native], vec![main()], json!({})))
        }
        Variant::Installed => {
            let plain = job(
                name,
                Vec::new(),
                vec![main(), sidecar(BASE_IMAGE)],
                sidecars,
            );
            let injected = inject(kubexit, &plain, &["--image", KUBEXIT_IMAGE])?;
            check_installed(&injected, KUBEXIT_IMAGE)?;
            Ok(injected)
        }
        Variant::InImage => {
            let mut main = main();
            main["image"] = json!(KUBEXIT_IMAGE);
            let plain = job(
                name,
                Vec::new(),
                vec![main, sidecar(KUBEXIT_IMAGE)],
                sidecars,
            );
            let injected = inject(kubexit, &plain, &["--install", "none"])?;
            check_in_image(&injected)?;
            Ok(injected)
        }
        Variant::Go => {
            let plain = job(
                name,
                Vec::new(),
                vec![main(), sidecar(BASE_IMAGE)],
                sidecars,
            );
            let injected = inject(kubexit, &plain, &["--image", GO_IMAGE])?;
            check_installed(&injected, GO_IMAGE)?;
            check_go_variables(&injected)?;
            Ok(injected)
        }
    }
}

/// `kubexit inject FLAGS -o json`, the plain Job on standard input.
fn inject(kubexit: &Path, plain: &Value, flags: &[&str]) -> Result<Value, String> {
    let mut command = Command::new(kubexit);
    without_kubexit_env(&mut command);
    let mut child = command
        .arg("inject")
        .args(flags)
        .args(["--output", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} inject: {e}", kubexit.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(plain.to_string().as_bytes())
        .map_err(|e| format!("kubexit inject: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubexit inject: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} inject {flags:?} failed ({}): {}",
            kubexit.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("kubexit inject's output: {e}"))
}

fn pod_spec(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]
}

/// What the measurement counts on: the install container first, from
/// `image`, copying the binary in.
fn check_installed(job: &Value, image: &str) -> Result<(), String> {
    let init = &pod_spec(job)["initContainers"][0];
    if init["name"] != "kubexit"
        || init["image"] != image
        || init["command"] != json!(["cp", "/bin/kubexit", "/kubexit/kubexit"])
    {
        return Err(format!(
            "kubexit inject wrote no install container from {image} copying /bin/kubexit: {init}"
        ));
    }
    Ok(())
}

/// No init container, and every command started with `kubexit`.
fn check_in_image(job: &Value) -> Result<(), String> {
    let spec = pod_spec(job);
    let wrapped = spec["containers"]
        .as_array()
        .is_some_and(|all| all.iter().all(|c| c["command"][0] == "kubexit"));
    if !spec["initContainers"].is_null() || !wrapped {
        return Err(format!(
            "kubexit inject --install none added an init container or left a command unwrapped: {spec}"
        ));
    }
    Ok(())
}

/// The Go kubexit would ignore a variable it does not know: none may be
/// written for it.
fn check_go_variables(job: &Value) -> Result<(), String> {
    for container in pod_spec(job)["containers"].as_array().into_iter().flatten() {
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap_or_default();
            if name.starts_with("KUBEXIT_") && !GO_VARIABLES.contains(&name) {
                return Err(format!(
                    "kubexit inject wrote {name} for {}, which the Go kubexit does not read",
                    container["name"]
                ));
            }
        }
    }
    Ok(())
}

/// Every variant's Job made and checked, without a node: what the smoke
/// run does for this measurement.
pub fn check_all(kubexit: &Path) -> Result<(), String> {
    for variant in Variant::ALL {
        of(variant, &format!("check-{}", variant.key()), kubexit)?;
    }
    Ok(())
}
