//! The manifests in `examples/` and the README are what users copy, so
//! they are checked like code: every Kubernetes object parses into the
//! typed object it claims to be (k8s-openapi) with no field lost on the
//! way (a misspelt field would be), and every container that runs kubexit
//! has a valid kubexit configuration whose dependencies exist in the same
//! pod and whose graveyard is a mounted volume. The docker compose file
//! gets the same kubexit checks.
#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use clap::Parser;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kubexit::config::{Args, Config, Environment};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

struct NoAliases;

impl Environment for NoAliases {
    fn get(&self, _: &str) -> Option<std::ffi::OsString> {
        None
    }
}

/// A container's kubexit setup, whatever it runs in.
struct Supervised {
    origin: String,
    /// The `KUBEXIT_*` variables; values from the downward API are
    /// stand-ins.
    env: BTreeMap<String, String>,
    /// Where the graveyard's volume is mounted, if it is known.
    mounts: Vec<String>,
}

impl Supervised {
    /// The configuration kubexit would build from these variables: each
    /// `KUBEXIT_X_Y` is given as its flag `--x-y`, so an unknown variable
    /// fails as an unknown flag.
    fn config(&self) -> Config {
        let mut words = vec!["kubexit".to_owned()];
        for (key, value) in &self.env {
            let flag = key
                .strip_prefix("KUBEXIT_")
                .unwrap()
                .to_ascii_lowercase()
                .replace('_', "-");
            words.push(format!("--{flag}"));
            words.push(value.clone());
        }
        words.push("true".into());
        let args = Args::try_parse_from(&words)
            .unwrap_or_else(|e| panic!("{}: kubexit variables {words:?}: {e}", self.origin));
        Config::from_args(args, &NoAliases)
            .unwrap_or_else(|e| panic!("{}: kubexit refuses {:?}: {e}", self.origin, self.env))
    }
}

/// Parses `doc` as `T` and back: the typed object must hold every field.
fn typed<T: DeserializeOwned + Serialize>(origin: &str, doc: &Value) -> T {
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(
        &back, doc,
        "{origin}: fields were lost parsing {} (a misspelt or misplaced field?)",
        doc["kind"]
    );
    object
}

/// Checks one Kubernetes object; returns the pod spec inside it, if any.
fn check_object(origin: &str, doc: &Value) -> Option<PodSpec> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let origin = format!("{origin} ({kind} {})", doc["metadata"]["name"]);
    match kind {
        "Job" => {
            let job: Job = typed(&origin, doc);
            assert!(
                doc["spec"].get("replicas").is_none(),
                "{origin}: a Job has no replicas"
            );
            job.spec.and_then(|s| s.template.spec)
        }
        "Pod" => typed::<Pod>(&origin, doc).spec,
        "Role" => {
            let role: Role = typed(&origin, doc);
            // API mode needs get, list and watch on pods.
            let rules = role.rules.unwrap_or_default();
            assert!(
                rules.iter().any(|r| {
                    let pods = r.resources.iter().flatten().any(|x| x == "pods");
                    let verbs = ["get", "list", "watch"]
                        .iter()
                        .all(|v| r.verbs.iter().any(|x| x == v));
                    pods && verbs
                }),
                "{origin}: API mode needs get, list and watch on pods"
            );
            None
        }
        "RoleBinding" => {
            typed::<RoleBinding>(&origin, doc);
            None
        }
        "ServiceAccount" => {
            typed::<ServiceAccount>(&origin, doc);
            None
        }
        other => panic!("{origin}: no check for kind {other:?}; add one"),
    }
}

/// The kubexit containers of a pod spec.
fn supervised_in(origin: &str, spec: &PodSpec) -> Vec<(Supervised, String)> {
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let mut found = Vec::new();
    for c in all {
        let env: BTreeMap<String, String> = c
            .env
            .iter()
            .flatten()
            .filter(|e| e.name.starts_with("KUBEXIT_"))
            .map(|e| {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(_)) => "from-the-downward-api".into(),
                    (None, None) => String::new(),
                };
                (e.name.clone(), value)
            })
            .collect();
        let words: Vec<&String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .collect();
        let runs_kubexit = words.iter().any(|w| w.contains("kubexit"));
        if env.is_empty() {
            continue;
        }
        assert!(
            runs_kubexit,
            "{origin}: container {} sets KUBEXIT_* but does not run kubexit",
            c.name
        );
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name.as_str()),
                "{origin}: container {} mounts undeclared volume {}",
                c.name,
                m.name
            );
        }
        let mounts = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.trim_end_matches('/').to_owned())
            .collect();
        found.push((
            Supervised {
                origin: format!("{origin} container {}", c.name),
                env,
                mounts,
            },
            c.name.clone(),
        ));
    }
    found
}

/// The pod-level checks: each kubexit's graveyard is mounted, and each
/// dependency is a kubexit of the pod (graveyard mode) or a container of
/// it (API mode).
fn check_pod(origin: &str, supervised: &[(Supervised, String)], containers: &[String]) {
    assert!(
        !supervised.is_empty(),
        "{origin}: no container runs kubexit"
    );
    let configs: Vec<Config> = supervised.iter().map(|(s, _)| s.config()).collect();
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    for ((s, _), config) in supervised.iter().zip(&configs) {
        let graveyard = config.graveyard.to_string_lossy();
        // A lone kubexit waiting through the API may keep its tombstone to
        // itself; every other graveyard is shared, so it must be a volume.
        let alone = supervised.len() == 1
            && config.death_deps.is_empty()
            && (config.birth_deps.is_empty() || config.pod.is_some());
        assert!(
            alone || s.mounts.iter().any(|m| *m == graveyard),
            "{}: the graveyard {graveyard} is not a mounted volume",
            s.origin
        );
        for dep in &config.death_deps {
            assert!(
                names.contains(&dep.as_str()),
                "{}: death dependency {dep} is no kubexit's name in this pod ({names:?})",
                s.origin
            );
        }
        for dep in &config.birth_deps {
            let known = if config.pod.is_some() {
                containers.iter().any(|c| c == dep.as_str())
            } else {
                names.contains(&dep.as_str())
            };
            assert!(known, "{}: birth dependency {dep} does not exist", s.origin);
        }
    }
}

fn check_manifest(origin: &str, text: &str) -> usize {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"));
    let mut pods = 0;
    for doc in docs.iter().filter(|d| !d.is_null()) {
        if let Some(spec) = check_object(origin, doc) {
            let containers: Vec<String> = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .map(|c| c.name.clone())
                .collect();
            let supervised = supervised_in(origin, &spec);
            check_pod(origin, &supervised, &containers);
            pods += 1;
        }
    }
    pods
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_kubernetes_example_is_a_valid_object_with_a_valid_kubexit_setup() {
    let mut checked = Vec::new();
    for entry in fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.ends_with(".yaml") || file.starts_with("docker-compose") {
            continue;
        }
        let pods = check_manifest(&file, &fs::read_to_string(&path).unwrap());
        assert!(pods > 0, "{file}: no Job or Pod in it");
        checked.push(file);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "client-server-job-api.yaml",
            "client-server-job-graveyard.yaml",
            "cloudsql-proxy-job.yaml",
            "native-sidecar.yaml"
        ]
    );
}

#[test]
fn every_complete_manifest_in_the_readme_is_valid() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = 0;
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap();
        // Fragments (an env list, one init container) are not objects.
        if !block.lines().any(|l| l.starts_with("kind: ")) {
            continue;
        }
        let origin = format!("README.md yaml block {}", i + 1);
        let docs: Vec<Value> = serde_saphyr::from_multiple(block).unwrap();
        for doc in docs.iter().filter(|d| !d.is_null()) {
            if let Some(spec) = check_object(&origin, doc) {
                let containers: Vec<String> =
                    spec.containers.iter().map(|c| c.name.clone()).collect();
                check_pod(&origin, &supervised_in(&origin, &spec), &containers);
            }
        }
        blocks += 1;
    }
    assert!(
        blocks >= 3,
        "only {blocks} complete manifests found in the README"
    );
}

#[test]
fn the_docker_compose_example_has_a_valid_kubexit_setup() {
    let text = fs::read_to_string(root().join("examples/docker-compose.yaml")).unwrap();
    let compose: Value = serde_saphyr::from_str(&text).unwrap();
    let volumes = compose["volumes"].as_object().expect("top-level volumes");
    let mut supervised = Vec::new();
    for (service, body) in compose["services"].as_object().expect("services") {
        let env: BTreeMap<String, String> = body["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("KUBEXIT_"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        if env.is_empty() {
            continue;
        }
        let mut mounts = Vec::new();
        for volume in body["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let (name, path) = spec.split_once(':').unwrap();
            assert!(
                volumes.contains_key(name),
                "{service}: undeclared volume {name}"
            );
            mounts.push(path.to_owned());
        }
        supervised.push((
            Supervised {
                origin: format!("docker-compose.yaml service {service}"),
                env,
                mounts,
            },
            service.clone(),
        ));
    }
    let services: Vec<String> = supervised.iter().map(|(_, s)| s.clone()).collect();
    check_pod("docker-compose.yaml", &supervised, &services);
    assert_eq!(supervised.len(), 2);
}
