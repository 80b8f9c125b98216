//! Kubernetes objects and compose files: each parsed as its runtime reads
//! it, each container's command line checked, and the kubexits of one pod
//! (or compose project) checked together.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Problems;
use super::runtime::{Accepted, ContainerSpec, Runtime, Supervised, accept, image};
use super::shell::{Token, invocations, tokens};

/// Checks one container's command line as its runtime would run it;
/// returns the kubexits in it that supervise a command.
pub fn check_container(c: &ContainerSpec, problems: &mut Problems) -> Vec<Supervised> {
    let image = image(&c.image);
    let sets_kubexit = c.env.keys().any(|k| k.starts_with("KUBEXIT_"));
    let mentions_kubexit = c
        .entrypoint
        .iter()
        .chain(&c.cmd)
        .flatten()
        .any(|w| w.contains("kubexit"));
    let (entry_key, cmd_key) = c.runtime.keys();
    let Some(argv) = c.argv(&image) else {
        if sets_kubexit || mentions_kubexit {
            problems.push(format!(
                "{}: runs kubexit but sets only `{cmd_key}`: the image {}'s own ENTRYPOINT would come first; give the whole command line in `{entry_key}`",
                c.origin, c.image
            ));
        }
        return Vec::new();
    };
    let Some(program) = argv.first() else {
        problems.push(format!(
            "{}: runs nothing (no ENTRYPOINT, CMD or {entry_key})",
            c.origin
        ));
        return Vec::new();
    };
    if let Some(programs) = &image.programs
        && !programs.contains(&program.as_str())
    {
        problems.push(format!(
            "{}: runs {argv:?}, but the image {} has no {program} (it has {programs:?})",
            c.origin, c.image
        ));
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut others = Vec::new();
    if let Err(e) = invocations(&argv, &mut found, &mut others) {
        problems.push(format!("{}: {e}", c.origin));
    }
    let mut supervised = Vec::new();
    for invocation in found {
        let program = Path::new(&invocation.argv[0]);
        let in_image = image.programs.is_some() && program == Path::new("/bin/kubexit");
        if program.is_absolute() && !in_image && !c.mounted(program) {
            problems.push(format!(
                "{}: runs {} from no mounted volume ({:?})",
                c.origin,
                program.display(),
                c.mounts
            ));
        }
        let mut env = c.env.clone();
        env.extend(invocation.env);
        match accept(&invocation.argv, &env, true) {
            Ok(Accepted::Supervises(config)) => supervised.push(Supervised {
                origin: c.origin.clone(),
                config: *config,
                mounts: c.mounts.clone(),
            }),
            Ok(Accepted::Installs(dir)) => {
                if !c.mounted(&dir) {
                    problems.push(format!(
                        "{}: installs kubexit into {}, which is no mounted volume",
                        c.origin,
                        dir.display()
                    ));
                }
            }
            Ok(Accepted::Prints | Accepted::Parses) => {}
            Err(e) => problems.push(format!("{}: runs {argv:?}: {e}", c.origin)),
        }
    }
    if sets_kubexit && supervised.is_empty() {
        problems.push(format!(
            "{}: sets KUBEXIT_* but supervises nothing with kubexit (it runs {argv:?})",
            c.origin
        ));
    }
    supervised
}

/// The pod-level checks: each kubexit's graveyard is mounted, and each
/// dependency is a kubexit of the pod (graveyard mode) or a container of
/// it (API mode).
pub fn check_pod(
    origin: &str,
    supervised: &[Supervised],
    containers: &[String],
    problems: &mut Problems,
) {
    if supervised.is_empty() {
        problems.push(format!("{origin}: no container runs kubexit"));
        return;
    }
    let names: Vec<&str> = supervised.iter().map(|s| s.config.name.as_str()).collect();
    for s in supervised {
        let config = &s.config;
        let graveyard = &config.graveyard;
        // A lone kubexit waiting through the API may keep its tombstone to
        // itself; every other graveyard is shared, so it must be a volume.
        let alone = supervised.len() == 1
            && config.death_deps.is_empty()
            && (config.birth_deps.is_empty() || config.pod.is_some());
        if !alone && !s.mounts.iter().any(|m| Path::new(m) == graveyard) {
            problems.push(format!(
                "{}: the graveyard {} is not a mounted volume",
                s.origin,
                graveyard.display()
            ));
        }
        for dep in &config.death_deps {
            if !names.contains(&dep.as_str()) {
                problems.push(format!(
                    "{}: death dependency {dep} is no kubexit's name here ({names:?})",
                    s.origin
                ));
            }
        }
        for dep in &config.birth_deps {
            let known = if config.pod.is_some() {
                containers.iter().any(|c| c == dep.as_str())
            } else {
                names.contains(&dep.as_str())
            };
            if !known {
                problems.push(format!(
                    "{}: birth dependency {dep} does not exist",
                    s.origin
                ));
            }
        }
    }
}

pub fn kubernetes_container(origin: &str, c: &Container) -> ContainerSpec {
    let env = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(_)) => "from-the-downward-api".into(),
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect();
    ContainerSpec {
        origin: format!("{origin} container {}", c.name),
        runtime: Runtime::Kubernetes,
        image: c.image.clone().unwrap_or_default(),
        entrypoint: c.command.clone(),
        cmd: c.args.clone(),
        env,
        mounts: c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.trim_end_matches('/').to_owned())
            .collect(),
    }
}

/// Checks a pod's containers, and the pod's kubexits together; returns
/// whether kubexit runs in it. A pod where nothing refers to kubexit is a
/// plain manifest (what `kubexit inject` reads, say): only its objects
/// are checked.
pub fn check_pod_spec(origin: &str, spec: &PodSpec, problems: &mut Problems) -> bool {
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
    let mut supervised = Vec::new();
    let mut refers_to_kubexit = false;
    for c in &all {
        let spec = kubernetes_container(origin, c);
        refers_to_kubexit |= spec.env.keys().any(|k| k.starts_with("KUBEXIT_"))
            || spec
                .entrypoint
                .iter()
                .chain(&spec.cmd)
                .flatten()
                .any(|w| w.contains("kubexit"));
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name.as_str()) {
                problems.push(format!(
                    "{origin}: container {} mounts undeclared volume {}",
                    c.name, m.name
                ));
            }
        }
        supervised.extend(check_container(&spec, problems));
    }
    if !refers_to_kubexit {
        return false;
    }
    let containers: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    check_pod(origin, &supervised, &containers, problems);
    true
}

/// Parses `doc` as `T` and back: the typed object must hold every field.
pub fn typed<T: DeserializeOwned + Serialize>(
    origin: &str,
    doc: &Value,
    problems: &mut Problems,
) -> Option<T> {
    let object: T = match serde_json::from_value(doc.clone()) {
        Ok(object) => object,
        Err(e) => {
            problems.push(format!("{origin}: not a valid {}: {e}", doc["kind"]));
            return None;
        }
    };
    let back = serde_json::to_value(&object).unwrap();
    if &back != doc {
        problems.push(format!(
            "{origin}: fields were lost parsing {} (a misspelt or misplaced field?)",
            doc["kind"]
        ));
    }
    Some(object)
}

/// A plain manifest (a pod that asks for kubexit in `kubexit.io/`
/// annotations, written for `kubexit inject`) is checked as `kubexit
/// inject` makes it: what users apply.
fn as_applied(origin: &str, doc: &Value, problems: &mut Problems) -> Value {
    let pointer = match doc["kind"].as_str() {
        Some("Pod") => "",
        Some("Job") => "/spec/template",
        _ => return doc.clone(),
    };
    let Some(template) = doc.pointer(pointer) else {
        return doc.clone();
    };
    let annotated = template["metadata"]["annotations"]
        .as_object()
        .is_some_and(|a| a.keys().any(|k| k.starts_with("kubexit.io/")));
    if !annotated || kubexit::inject::is_injected(template) {
        return doc.clone();
    }
    match kubexit::inject::inject(template, &kubexit::inject::Options::default()) {
        Ok(injection) => {
            let mut applied = doc.clone();
            match applied.pointer_mut(pointer) {
                Some(slot) => *slot = injection.template,
                None => applied = injection.template,
            }
            applied
        }
        Err(err) => {
            problems.push(format!("{origin}: kubexit inject refuses it: {err}"));
            doc.clone()
        }
    }
}

/// Checks one Kubernetes object, and the pod inside it if any; returns
/// whether it held a pod that runs kubexit.
pub fn check_object(origin: &str, doc: &Value, problems: &mut Problems) -> bool {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let origin = format!("{origin} ({kind} {})", doc["metadata"]["name"]);
    let doc = &as_applied(&origin, doc, problems);
    let spec = match kind {
        "Job" => {
            if doc["spec"].get("replicas").is_some() {
                problems.push(format!("{origin}: a Job has no replicas"));
            }
            typed::<Job>(&origin, doc, problems)
                .and_then(|job| job.spec)
                .and_then(|s| s.template.spec)
        }
        "Pod" => typed::<Pod>(&origin, doc, problems).and_then(|p| p.spec),
        "Role" => {
            // API mode needs get, list and watch on pods.
            let rules = typed::<Role>(&origin, doc, problems)
                .and_then(|r| r.rules)
                .unwrap_or_default();
            let enough = rules.iter().any(|r| {
                let pods = r.resources.iter().flatten().any(|x| x == "pods");
                let verbs = ["get", "list", "watch"]
                    .iter()
                    .all(|v| r.verbs.iter().any(|x| x == v));
                pods && verbs
            });
            if !enough {
                problems.push(format!(
                    "{origin}: API mode needs get, list and watch on pods"
                ));
            }
            None
        }
        "RoleBinding" => {
            typed::<RoleBinding>(&origin, doc, problems);
            None
        }
        "ServiceAccount" => {
            typed::<ServiceAccount>(&origin, doc, problems);
            None
        }
        other => {
            problems.push(format!("{origin}: no check for kind {other:?}; add one"));
            None
        }
    };
    match spec {
        Some(spec) => check_pod_spec(&origin, &spec, problems),
        None => false,
    }
}

/// Checks every object of a YAML stream; returns how many held a pod
/// that runs kubexit.
pub fn check_manifest(origin: &str, text: &str, problems: &mut Problems) -> usize {
    let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => {
            problems.push(format!("{origin}: not YAML: {e}"));
            return 0;
        }
    };
    docs.iter()
        .filter(|d| !d.is_null())
        .filter(|d| check_object(origin, d, problems))
        .count()
}

// ---------------------------------------------------------------------------
// docker compose
// ---------------------------------------------------------------------------

/// A compose value that is a command line: a list, or a string split as
/// the shell would.
pub fn compose_words(value: &Value) -> Result<Option<Vec<String>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => {
            let words = tokens(s)?
                .into_iter()
                .map(|t| match t {
                    Token::Word(w) => Ok(w),
                    Token::Operator => Err(format!("an operator in {s:?}: compose runs no shell")),
                })
                .collect::<Result<_, _>>()?;
            Ok(Some(words))
        }
        Value::Array(items) => Ok(Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or(format!("{v} is not a string"))
                })
                .collect::<Result<_, _>>()?,
        )),
        other => Err(format!("{other} is not a command line")),
    }
}

/// Checks a compose file as compose would run it; returns the kubexits
/// that supervise a command. A `whole` file must have some; a fragment
/// (one service, say) need not.
pub fn check_compose(origin: &str, text: &str, whole: bool, problems: &mut Problems) -> usize {
    let compose: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{origin}: not YAML: {e}"));
            return 0;
        }
    };
    let volumes = compose["volumes"].as_object().cloned().unwrap_or_default();
    let mut supervised = Vec::new();
    let mut services = Vec::new();
    for (service, body) in compose["services"].as_object().into_iter().flatten() {
        let origin = format!("{origin} service {service}");
        services.push(service.clone());
        let env: BTreeMap<String, String> = match &body["environment"] {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), v)
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let mut mounts = Vec::new();
        for volume in body["volumes"].as_array().into_iter().flatten() {
            let Some((name, path)) = volume.as_str().and_then(|s| s.split_once(':')) else {
                problems.push(format!("{origin}: use the short volume syntax NAME:PATH"));
                continue;
            };
            if !volumes.contains_key(name) {
                problems.push(format!("{origin}: undeclared volume {name}"));
            }
            mounts.push(path.split(':').next().unwrap_or(path).to_owned());
        }
        let (entrypoint, cmd) = match (
            compose_words(&body["entrypoint"]),
            compose_words(&body["command"]),
        ) {
            (Ok(e), Ok(c)) => (e, c),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("{origin}: {e}"));
                continue;
            }
        };
        let spec = ContainerSpec {
            origin,
            runtime: Runtime::Compose,
            image: body["image"].as_str().unwrap_or_default().to_owned(),
            entrypoint,
            cmd,
            env,
            mounts,
        };
        supervised.extend(check_container(&spec, problems));
    }
    if whole || !supervised.is_empty() {
        check_pod(origin, &supervised, &services, problems);
    }
    supervised.len()
}

/// Whether a YAML block is a complete manifest rather than a fragment.
pub fn is_manifest(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("kind: "))
}

/// Checks a YAML fragment: compose services are checked as compose runs
/// them, any other container (a mapping with `name` and `image`) as
/// Kubernetes does, and an `env` list on its own must make a
/// configuration kubexit accepts.
pub fn check_fragment(origin: &str, text: &str, problems: &mut Problems) {
    let value: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{origin}: not YAML: {e}"));
            return;
        }
    };
    if value.get("services").is_some() {
        check_compose(origin, text, false, problems);
        return;
    }
    fn walk(origin: &str, value: &Value, top: bool, problems: &mut Problems) {
        match value {
            Value::Object(map) if map.contains_key("name") && map.contains_key("image") => {
                match serde_json::from_value::<Container>(value.clone()) {
                    Ok(c) => {
                        check_container(&kubernetes_container(origin, &c), problems);
                    }
                    Err(e) => problems.push(format!("{origin}: not a valid container: {e}")),
                }
            }
            Value::Object(map) if top && map.len() == 1 && map.contains_key("env") => {
                let container = serde_json::json!({"name": "fragment", "env": map["env"]});
                match serde_json::from_value::<Container>(container) {
                    Ok(c) => {
                        let spec = kubernetes_container(origin, &c);
                        if let Err(e) = accept(&["kubexit".into(), "true".into()], &spec.env, true)
                        {
                            problems.push(format!("{origin}: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("{origin}: not a valid env list: {e}")),
                }
            }
            Value::Object(map) => map.values().for_each(|v| walk(origin, v, false, problems)),
            Value::Array(items) => items.iter().for_each(|v| walk(origin, v, false, problems)),
            _ => {}
        }
    }
    walk(origin, &value, true, problems);
}
