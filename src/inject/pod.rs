//! The transformation: one pod (or pod template) and its `kubexit.io/`
//! annotations in, the coordinated pod out, or an error that says which
//! container is wrong and how to fix it. No I/O: the command line and the
//! admission webhook both call [`inject`] and [`uninject`].
//!
//! Who does what follows from the annotations (see `vocabulary`) and a few
//! defaults that make the common pod a one-line annotation:
//!
//! - **Coordinated containers** are the pod's `containers`, less those in
//!   `kubexit.io/skip`. Init containers, native sidecars (init containers
//!   with `restartPolicy: Always`) included, are never wrapped: they run
//!   before the main containers, and the kubelet already stops native
//!   sidecars after them.
//! - **Sidecars** (`kubexit.io/sidecars`) are stopped once every main
//!   container (the coordinated containers that are not sidecars) has
//!   died: their death dependencies are the main containers, with the
//!   death policy `all` when there are several (with one, `any` and `all`
//!   agree, and the variable is left out).
//! - **Main containers wait for sidecars that declare readiness**: a
//!   sidecar with `kubexit.io/ready-probe.NAME`, or else with a
//!   readinessProbe that kubexit can run itself (see `kubelet_probe`), is
//!   a birth dependency of every main container, and its probe becomes its
//!   `KUBEXIT_READY_PROBE`. `kubexit.io/ready-probe.NAME: none` opts out.
//! - Explicit `birth-deps`, `death-deps` and `death-policy` of a container
//!   replace these defaults for that container; every other setting is
//!   passed to the containers it concerns as its variable.
//!
//! What it adds: a graveyard volume (`emptyDir`, medium `Memory`) mounted
//! at `/graveyard` and a volume for the binary mounted at `/kubexit`
//! (before the pod's own volumes, as this project's manifests have always
//! listed them), an init container, first of all, that installs kubexit, and on each
//! coordinated container: `/kubexit/kubexit` before its `command` (`args`
//! untouched), `KUBEXIT_NAME` (the container's name), `KUBEXIT_GRAVEYARD`
//! and the settings' variables after its own variables, and the two mounts
//! after its own. Nothing else of the user's (resources, security
//! contexts, probes, unknown fields) is touched. The record of all that
//! (see `record`) makes [`uninject`] exact and re-injection idempotent: a
//! pod that was injected is first taken back to what it was, then injected
//! again, so the same annotations give the same pod.
//!
//! Every check happens before the first change, so an error never leaves
//! half a pod.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::kubelet_probe;
use super::record::{self, CommandChange, ContainerRecord, KUBEXIT_PATH, Record, RecordError};
use super::vocabulary::{
    self, AnnotationError, Annotations, Install, ReadyProbe, Setting, Value as Given,
};

/// The graveyard volume and where it is mounted.
pub const GRAVEYARD_VOLUME: &str = "graveyard";
pub const GRAVEYARD_PATH: &str = "/graveyard";
/// The volume kubexit is installed into, and the init container that does it.
pub const BINARY_VOLUME: &str = "kubexit";
pub const BINARY_DIR: &str = "/kubexit";
pub const INSTALL_CONTAINER: &str = "kubexit";
/// Where kubexit is in its image.
const IMAGE_BINARY: &str = "/bin/kubexit";

/// The image the install container runs when neither the caller nor
/// `kubexit.io/image` names one: this version of kubexit's.
pub fn default_image() -> String {
    format!("ghcr.io/kubexit/kubexit:{}", env!("CARGO_PKG_VERSION"))
}

/// What the caller adds to every pod's annotations.
#[derive(Debug, Clone)]
pub struct Options {
    /// The install container's image when `kubexit.io/image` is not set.
    pub image: String,
    /// Annotations set on the pod before it is read (the command line's
    /// flags); recorded, so that uninjecting restores the user's.
    pub overrides: BTreeMap<String, String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: default_image(),
            overrides: BTreeMap::new(),
        }
    }
}

/// A pod after [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The pod (template), coordinated.
    pub template: Value,
    /// The coordinated containers, in the pod's order; empty when nothing
    /// was injected (`kubexit.io/inject: disabled`, or every container
    /// skipped).
    pub containers: Vec<String>,
}

/// Why a pod cannot be injected. Each message names the container or the
/// annotation concerned and says what to change; the caller adds which
/// object it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("{0}")]
    Annotation(#[from] AnnotationError),
    #[error(
        "annotation {key} names {name}, which is not a container of this pod{}",
        near(hint, containers)
    )]
    NotAContainer {
        key: String,
        name: String,
        hint: Option<String>,
        containers: Vec<String>,
    },
    #[error(
        "annotation {key} names {name}, an init container: kubexit coordinates the pod's containers; \
         init containers have ended before they start"
    )]
    InitContainer { key: String, name: String },
    #[error(
        "annotation {key} names {name}, a native sidecar (an init container with restartPolicy: \
         Always), which kubexit leaves to the kubelet: it starts before the main containers (give it \
         a startupProbe to make them wait until it passes) and is stopped after them; take {name} out \
         of {key}"
    )]
    NativeSidecar { key: String, name: String },
    #[error(
        "annotation {key} names {name}, which kubexit.io/skip leaves alone; take it out of one of them"
    )]
    Skipped { key: String, name: String },
    #[error("annotation {key}: container {name} cannot depend on itself")]
    SelfDependency { key: String, name: String },
    #[error(
        "birth dependencies form a cycle, so none of these containers would ever start: {}; \
         remove one of them from a kubexit.io/birth-deps annotation",
        cycle.join(" -> ")
    )]
    BirthCycle { cycle: Vec<String> },
    #[error(
        "kubexit.io/sidecars names every coordinated container ({}): nothing would stop them; \
         leave the main container out of it",
        sidecars.join(", ")
    )]
    NoMainContainer { sidecars: Vec<String> },
    #[error(
        "container {container} has no command, so it runs its image's ENTRYPOINT, which kubexit \
         cannot know; add `command` to the container, or name the entrypoint with \
         `--entrypoint {container}=CMD` (annotation kubexit.io/entrypoint.{container}), \
         or leave it alone with kubexit.io/skip"
    )]
    NoCommand { container: String },
    #[error(
        "container {container} has a command, so kubexit.io/entrypoint.{container} is not used; \
         remove the annotation"
    )]
    EntrypointWithCommand { container: String },
    #[error(
        "container {container} already runs kubexit ({word}) without kubexit.io/injected: it looks \
         coordinated by hand; remove kubexit from its command and its KUBEXIT_ variables, or leave \
         it alone with kubexit.io/skip"
    )]
    AlreadyWrapped { container: String, word: String },
    #[error(
        "container {container} sets {variable} itself, which kubexit inject would set; remove it \
         and use the kubexit.io/ annotation (see docs/inject.md)"
    )]
    VariableTaken { container: String, variable: String },
    #[error("the pod already has {what} named {name}, which kubexit inject adds; rename yours")]
    NameTaken { what: &'static str, name: String },
    #[error(
        "container {container} already mounts a volume at {path}, where kubexit inject mounts its own; move yours"
    )]
    MountTaken { container: String, path: String },
    #[error(
        "container {container} is waited for (a birth dependency), but its readinessProbe cannot \
         be run by kubexit: {why}; set kubexit.io/ready-probe.{container} to a probe \
         (tcp://, http://, exec:...), or to none"
    )]
    ProbeNotTranslatable { container: String, why: String },
    #[error(
        "kubexit.io/quit is pod-wide, but there are several main containers ({}): the first to end \
         would stop the sidecar the others still use; set kubexit.io/quit.CONTAINER on the one that \
         ends last",
        mains.join(", ")
    )]
    QuitWithSeveralMains { mains: Vec<String> },
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Malformed(String),
}

fn near(hint: &Option<String>, containers: &[String]) -> String {
    match hint {
        Some(near) => format!("; did you mean {near}?"),
        None => format!(" (its containers: {})", containers.join(", ")),
    }
}

/// Whether `template` carries the record of an injection.
pub fn is_injected(template: &Value) -> bool {
    annotation(template, &record::key()).is_some()
}

/// The containers an injected `template` coordinates, from its record;
/// none when it is not injected.
pub fn injected_containers(template: &Value) -> Result<Vec<String>, InjectError> {
    match annotation(template, &record::key()) {
        Some(text) => Ok(Record::from_json(text)?.containers.into_keys().collect()),
        None => Ok(Vec::new()),
    }
}

/// Whether `template` opted out (`kubexit.io/inject: disabled`).
pub fn is_disabled(template: &Value) -> bool {
    annotation(template, &Setting::Inject.pod_key()).is_some_and(|v| v.trim() == "disabled")
}

fn annotation<'a>(template: &'a Value, key: &str) -> Option<&'a str> {
    template
        .pointer("/metadata/annotations")?
        .get(key)?
        .as_str()
}

/// Coordinates the containers of `template`, a pod or a pod template (an
/// object with `metadata` and `spec`; other fields are kept as they are),
/// as its `kubexit.io/` annotations and `options` say. An injected
/// template is taken back first and injected anew, so injecting twice
/// changes nothing.
pub fn inject(template: &Value, options: &Options) -> Result<Injection, InjectError> {
    let mut base = template.clone();
    let mut before: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut created: Vec<String> = Vec::new();
    if let Some(text) = annotation(template, &record::key()) {
        let old = Record::from_json(text)?;
        record::undo(&mut base, &old)?;
        before = old.annotations;
        created.extend(
            old.created
                .into_iter()
                .filter(|c| c == "metadata" || c == "metadata.annotations"),
        );
    }
    if !base.is_object() || !base.get("spec").is_some_and(Value::is_object) {
        return Err(InjectError::Malformed(
            "it has no pod spec (spec must be an object)".into(),
        ));
    }

    // The caller's annotations, with what they replace.
    if !options.overrides.is_empty() {
        let metadata = object_field(&mut base, "metadata", &mut created, "metadata")?;
        let annotations = object_field_of(
            metadata,
            "annotations",
            &mut created,
            "metadata.annotations",
        )?;
        for (key, value) in &options.overrides {
            let old = annotations
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned);
            before.entry(key.clone()).or_insert(old);
            annotations.insert(key.clone(), Value::String(value.clone()));
        }
    }
    let current = annotations_of(&base)?;
    before.retain(|key, old| current.get(key) != old.as_ref());

    let read = vocabulary::read(&current)?;
    // Not injected: the pod as the user wrote it, whatever the flags said.
    let untouched = || -> Result<Injection, InjectError> {
        Ok(Injection {
            template: uninject(template)?,
            containers: Vec::new(),
        })
    };
    if !read.enabled() {
        return untouched();
    }
    let pod = Pod::of(&base)?;
    let plan = plan(&pod, &read)?;
    if plan.containers.is_empty() {
        return untouched();
    }
    check_room(&pod, &plan)?;

    // Every check is done: from here on nothing fails.
    let image = match read.pod(Setting::Image) {
        Some((_, Given::Text(image))) => image.clone(),
        _ => options.image.clone(),
    };
    let mut record = Record {
        init_containers: vec![INSTALL_CONTAINER.to_owned()],
        volumes: vec![GRAVEYARD_VOLUME.to_owned(), BINARY_VOLUME.to_owned()],
        created,
        annotations: before,
        ..Record::default()
    };
    let spec = base["spec"].as_object_mut().expect("checked above");
    let install_command = match read.install() {
        Install::Copy => json!(["cp", IMAGE_BINARY, KUBEXIT_PATH]),
        Install::SelfInstall => json!([IMAGE_BINARY, "--install", BINARY_DIR]),
    };
    let install = json!({
        "name": INSTALL_CONTAINER,
        "image": image,
        "command": install_command,
        "volumeMounts": [{"mountPath": BINARY_DIR, "name": BINARY_VOLUME}],
    });
    list_field(
        spec,
        "initContainers",
        &mut record.created,
        "spec.initContainers",
        (&["containers"], &[]),
    )
    .insert(0, install);
    list_field(
        spec,
        "volumes",
        &mut record.created,
        "spec.volumes",
        (&["initContainers", "containers"], &[]),
    )
    .splice(
        0..0,
        [
            json!({"name": GRAVEYARD_VOLUME, "emptyDir": {"medium": "Memory"}}),
            json!({"name": BINARY_VOLUME, "emptyDir": {}}),
        ],
    );
    let containers = spec["containers"]
        .as_array_mut()
        .expect("checked by Pod::of");
    for container in containers.iter_mut() {
        let name = container["name"].as_str().unwrap_or_default().to_owned();
        let Some(planned) = plan.containers.get(&name) else {
            continue;
        };
        let container = container.as_object_mut().expect("checked by Pod::of");
        let mut created = Vec::new();
        let command = match container.get_mut("command").and_then(Value::as_array_mut) {
            Some(words) => {
                words.insert(0, json!(KUBEXIT_PATH));
                CommandChange::Wrapped
            }
            None => {
                let mut words = vec![json!(KUBEXIT_PATH)];
                words.extend(planned.entrypoint.iter().map(|w| json!(w)));
                place(
                    container,
                    "command",
                    Value::Array(words),
                    &["args"],
                    &["name", "image"],
                );
                CommandChange::Added
            }
        };
        let env = list_field(
            container,
            "env",
            &mut created,
            "env",
            (&[], &["command", "args"]),
        );
        for (variable, value) in &planned.env {
            env.push(json!({"name": variable, "value": value}));
        }
        list_field(
            container,
            "volumeMounts",
            &mut created,
            "volumeMounts",
            (&[], &["env"]),
        )
        .extend([
            json!({"mountPath": GRAVEYARD_PATH, "name": GRAVEYARD_VOLUME}),
            json!({"mountPath": BINARY_DIR, "name": BINARY_VOLUME}),
        ]);
        record.containers.insert(
            name,
            ContainerRecord {
                command,
                env: planned.env.iter().map(|(v, _)| v.clone()).collect(),
                volume_mounts: vec![GRAVEYARD_VOLUME.to_owned(), BINARY_VOLUME.to_owned()],
                created,
            },
        );
    }
    let metadata = object_field(&mut base, "metadata", &mut record.created, "metadata")
        .expect("checked by annotations_of");
    let annotations = object_field_of(
        metadata,
        "annotations",
        &mut record.created,
        "metadata.annotations",
    )
    .expect("checked by annotations_of");
    annotations.insert(record::key(), Value::String(record.to_json()));
    Ok(Injection {
        template: base,
        containers: plan.order,
    })
}

/// Gives back `template` as it was before [`inject`]: what was added taken
/// out, the annotations the injector set restored. A template that was not
/// injected is given back unchanged.
pub fn uninject(template: &Value) -> Result<Value, InjectError> {
    let mut base = template.clone();
    let Some(text) = annotation(template, &record::key()) else {
        return Ok(base);
    };
    let record = Record::from_json(text)?;
    record::undo(&mut base, &record)?;
    record::restore_annotations(&mut base, &record);
    Ok(base)
}

/// The parts of a pod the plan reads.
struct Pod<'a> {
    containers: Vec<&'a Map<String, Value>>,
    /// Init container names, each with whether it is a native sidecar.
    init: Vec<(String, bool)>,
    volumes: Vec<String>,
}

impl<'a> Pod<'a> {
    fn of(template: &'a Value) -> Result<Pod<'a>, InjectError> {
        let spec = &template["spec"];
        let named = |field: &str| -> Result<Vec<&'a Map<String, Value>>, InjectError> {
            let Some(items) = spec.get(field) else {
                return Ok(Vec::new());
            };
            let items = items
                .as_array()
                .ok_or_else(|| InjectError::Malformed(format!("spec.{field} is not a list")))?;
            items
                .iter()
                .map(|item| {
                    item.as_object()
                        .filter(|c| c.get("name").is_some_and(Value::is_string))
                        .ok_or_else(|| {
                            InjectError::Malformed(format!(
                                "spec.{field} has an entry without a name"
                            ))
                        })
                })
                .collect()
        };
        let containers = named("containers")?;
        if containers.is_empty() {
            return Err(InjectError::Malformed("spec.containers is empty".into()));
        }
        let init = named("initContainers")?
            .into_iter()
            .map(|c| {
                let native = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                (name_of(c).to_owned(), native)
            })
            .collect();
        let volumes = named("volumes")?
            .into_iter()
            .map(|v| name_of(v).to_owned())
            .collect();
        Ok(Pod {
            containers,
            init,
            volumes,
        })
    }

    fn names(&self) -> Vec<String> {
        self.containers
            .iter()
            .map(|c| name_of(c).to_owned())
            .collect()
    }

    fn container(&self, name: &str) -> Option<&'a Map<String, Value>> {
        self.containers.iter().copied().find(|c| name_of(c) == name)
    }
}

fn name_of(object: &Map<String, Value>) -> &str {
    object
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What one container gets.
struct Planned {
    /// The command when the container has none (`kubexit.io/entrypoint`).
    entrypoint: Vec<String>,
    /// The variables, in order.
    env: Vec<(String, String)>,
}

struct Plan {
    order: Vec<String>,
    containers: BTreeMap<String, Planned>,
}

/// Decides every container's settings, checking every name.
fn plan(pod: &Pod, read: &Annotations) -> Result<Plan, InjectError> {
    let all = pod.names();
    let names_of = |setting: Setting| -> Vec<String> {
        read.pod(setting)
            .map(|(_, v)| v.names().to_vec())
            .unwrap_or_default()
    };
    let skip = names_of(Setting::Skip);
    let sidecars = names_of(Setting::Sidecars);
    // A name in a list must be a container that kubexit may coordinate.
    let check = |key: &str, name: &str, coordinated_only: bool| -> Result<(), InjectError> {
        if all.iter().any(|c| c == name) {
            if coordinated_only && skip.iter().any(|s| s == name) {
                return Err(InjectError::Skipped {
                    key: key.to_owned(),
                    name: name.to_owned(),
                });
            }
            return Ok(());
        }
        if let Some((_, native)) = pod.init.iter().find(|(n, _)| n == name) {
            return Err(if *native {
                InjectError::NativeSidecar {
                    key: key.to_owned(),
                    name: name.to_owned(),
                }
            } else {
                InjectError::InitContainer {
                    key: key.to_owned(),
                    name: name.to_owned(),
                }
            });
        }
        Err(InjectError::NotAContainer {
            key: key.to_owned(),
            name: name.to_owned(),
            hint: vocabulary::nearest(name, all.iter().map(String::as_str)).map(str::to_owned),
            containers: all.clone(),
        })
    };
    let pod_key = |s: Setting| s.pod_key();
    for name in &skip {
        check(&pod_key(Setting::Skip), name, false)?;
    }
    for name in &sidecars {
        check(&pod_key(Setting::Sidecars), name, true)?;
    }
    for (container, key) in read.named_containers() {
        check(key, container, true)?;
    }
    let coordinated: Vec<String> = all.iter().filter(|c| !skip.contains(c)).cloned().collect();
    let mains: Vec<String> = coordinated
        .iter()
        .filter(|c| !sidecars.contains(c))
        .cloned()
        .collect();
    if mains.is_empty() && !coordinated.is_empty() {
        return Err(InjectError::NoMainContainer {
            sidecars: coordinated,
        });
    }

    // Readiness: declared, or translated from the container's own probe.
    let declared = |name: &str| match read.own(name, Setting::ReadyProbe) {
        Some((_, Given::Ready(probe))) => Some(probe.clone()),
        _ => None,
    };
    let readiness = |name: &str| -> Result<Option<String>, InjectError> {
        match declared(name) {
            Some(ReadyProbe::Off) => Ok(None),
            Some(ReadyProbe::Probe(probe)) => Ok(Some(probe)),
            None => {
                let container = Value::Object(pod.container(name).cloned().unwrap_or_default());
                kubelet_probe::readiness(&container).map_err(|why| {
                    InjectError::ProbeNotTranslatable {
                        container: name.to_owned(),
                        why,
                    }
                })
            }
        }
    };
    let mut ready_sidecars = Vec::new();
    for sidecar in &sidecars {
        if readiness(sidecar)?.is_some() {
            ready_sidecars.push(sidecar.clone());
        }
    }

    // Dependencies: explicit, or the defaults for mains and sidecars.
    let explicit = |name: &str, setting: Setting| read.own(name, setting);
    let mut birth: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut death: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &coordinated {
        let sidecar = sidecars.contains(name);
        for (setting, map, default) in [
            (
                Setting::BirthDeps,
                &mut birth,
                if sidecar {
                    Vec::new()
                } else {
                    ready_sidecars.clone()
                },
            ),
            (
                Setting::DeathDeps,
                &mut death,
                if sidecar { mains.clone() } else { Vec::new() },
            ),
        ] {
            let deps = match explicit(name, setting) {
                Some((key, value)) => {
                    for dep in value.names() {
                        check(key, dep, true)?;
                        if dep == name {
                            return Err(InjectError::SelfDependency {
                                key: key.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                    value.names().to_vec()
                }
                None => default,
            };
            map.insert(name.clone(), deps);
        }
        if let Some((key, value)) = explicit(name, Setting::StopAfter) {
            for dep in value.names() {
                check(key, dep, true)?;
                if dep == name {
                    return Err(InjectError::SelfDependency {
                        key: key.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    if let Some(cycle) = birth_cycle(&coordinated, &birth) {
        return Err(InjectError::BirthCycle { cycle });
    }
    let waited_for: BTreeSet<&String> = birth.values().flatten().collect();
    if mains.len() > 1 && read.pod(Setting::Quit).is_some() {
        let unset = mains.iter().any(|m| read.own(m, Setting::Quit).is_none());
        if unset {
            return Err(InjectError::QuitWithSeveralMains { mains });
        }
    }

    let mut containers = BTreeMap::new();
    for name in &coordinated {
        let container = pod.container(name).expect("a container of the pod");
        let sidecar = sidecars.contains(name);
        let entrypoint = match (
            container.get("command"),
            read.own(name, Setting::Entrypoint),
        ) {
            (Some(Value::Array(words)), entry) => {
                if entry.is_some() {
                    return Err(InjectError::EntrypointWithCommand {
                        container: name.clone(),
                    });
                }
                if let Some(word) = words.first().and_then(Value::as_str)
                    && (word == "kubexit" || word.ends_with("/kubexit"))
                {
                    return Err(InjectError::AlreadyWrapped {
                        container: name.clone(),
                        word: word.to_owned(),
                    });
                }
                Vec::new()
            }
            (Some(_), _) => {
                return Err(InjectError::Malformed(format!(
                    "container {name}: command is not a list"
                )));
            }
            (None, Some((_, Given::Command(words)))) => words.clone(),
            (None, _) => {
                return Err(InjectError::NoCommand {
                    container: name.clone(),
                });
            }
        };

        let text = |setting: Setting| match read.for_container(name, setting) {
            Some((_, Given::Text(text))) => Some(text.clone()),
            _ => None,
        };
        let own = |setting: Setting| read.own(name, setting).is_some();
        let births = &birth[name];
        let deaths = &death[name];
        let mut env: Vec<(String, String)> = vec![
            ("KUBEXIT_NAME".into(), name.clone()),
            ("KUBEXIT_GRAVEYARD".into(), GRAVEYARD_PATH.into()),
        ];
        let stop_after = explicit(name, Setting::StopAfter).map(|(_, v)| v.names().to_vec());
        let quit = match read.own(name, Setting::Quit) {
            Some((_, Given::Text(urls))) => Some(urls.clone()),
            _ if !sidecar => text(Setting::Quit),
            _ => None,
        };
        let birth_probes = match read.own(name, Setting::BirthProbes) {
            Some((_, Given::Text(probes))) => Some(probes.clone()),
            _ if !sidecar => text(Setting::BirthProbes),
            _ => None,
        };
        for setting in Setting::all() {
            let Some(variable) = setting.variable() else {
                continue;
            };
            let value = match setting {
                Setting::BirthDeps => Some(births.join(",")).filter(|v| !v.is_empty()),
                Setting::DeathDeps => Some(deaths.join(",")).filter(|v| !v.is_empty()),
                Setting::DeathPolicy => text(setting).or_else(|| {
                    let implied = sidecar && explicit(name, Setting::DeathDeps).is_none();
                    (implied && deaths.len() > 1).then(|| "all".to_owned())
                }),
                Setting::BirthProbes => birth_probes.clone(),
                Setting::BirthTimeout => text(setting)
                    .filter(|_| own(setting) || !births.is_empty() || birth_probes.is_some()),
                Setting::ReadyProbe => match declared(name) {
                    Some(ReadyProbe::Probe(probe)) => Some(probe),
                    Some(ReadyProbe::Off) => None,
                    None if waited_for.contains(name) => readiness(name)?,
                    None => None,
                },
                Setting::StopAfter => stop_after
                    .as_ref()
                    .map(|n| n.join(","))
                    .filter(|v| !v.is_empty()),
                Setting::StopAfterTimeout => {
                    text(setting).filter(|_| own(setting) || stop_after.is_some())
                }
                Setting::Quit => quit.clone(),
                Setting::QuitTimeout => text(setting).filter(|_| own(setting) || quit.is_some()),
                _ => text(setting),
            };
            if let Some(value) = value {
                env.push((variable.to_owned(), value));
            }
        }
        containers.insert(name.clone(), Planned { entrypoint, env });
    }
    Ok(Plan {
        order: coordinated,
        containers,
    })
}

/// A birth-dependency cycle, as the names along it (first repeated last).
fn birth_cycle(order: &[String], birth: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        name: &str,
        birth: &BTreeMap<String, Vec<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::Open => {
                let start = path.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name.to_owned());
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(name.to_owned(), Mark::Open);
        path.push(name.to_owned());
        for dep in birth.get(name).into_iter().flatten() {
            if let Some(cycle) = visit(dep, birth, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(name.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    order
        .iter()
        .find_map(|name| visit(name, birth, &mut marks, &mut Vec::new()))
}

/// The names and paths kubexit adds must be free.
fn check_room(pod: &Pod, plan: &Plan) -> Result<(), InjectError> {
    for volume in [GRAVEYARD_VOLUME, BINARY_VOLUME] {
        if pod.volumes.iter().any(|v| v == volume) {
            return Err(InjectError::NameTaken {
                what: "a volume",
                name: volume.to_owned(),
            });
        }
    }
    let containers = pod.names();
    if pod.init.iter().any(|(n, _)| n == INSTALL_CONTAINER)
        || containers.iter().any(|c| c == INSTALL_CONTAINER)
    {
        return Err(InjectError::NameTaken {
            what: "a container",
            name: INSTALL_CONTAINER.to_owned(),
        });
    }
    for name in &plan.order {
        let container = pod.container(name).expect("a container of the pod");
        for mount in container
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = mount["mountPath"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/');
            if path == GRAVEYARD_PATH || path == BINARY_DIR {
                return Err(InjectError::MountTaken {
                    container: name.clone(),
                    path: path.to_owned(),
                });
            }
        }
        let planned = &plan.containers[name];
        for variable in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
        {
            if planned.env.iter().any(|(v, _)| v == variable) {
                return Err(InjectError::VariableTaken {
                    container: name.clone(),
                    variable: variable.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The annotations of a template, which must be strings.
fn annotations_of(template: &Value) -> Result<BTreeMap<String, String>, InjectError> {
    let annotations = match template.pointer("/metadata/annotations") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(annotations) => annotations,
    };
    let annotations = annotations
        .as_object()
        .ok_or_else(|| InjectError::Malformed("metadata.annotations is not a map".into()))?;
    annotations
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(InjectError::Malformed(format!(
                "annotation {k} is not a string; quote its value"
            ))),
        })
        .collect()
}

/// The object at `field` of `value`, made (and its making recorded) if
/// missing.
fn object_field<'v>(
    value: &'v mut Value,
    field: &str,
    created: &mut Vec<String>,
    created_as: &str,
) -> Result<&'v mut Map<String, Value>, InjectError> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("it is not an object".into()))?;
    object_field_of(object, field, created, created_as)
}

fn object_field_of<'v>(
    object: &'v mut Map<String, Value>,
    field: &str,
    created: &mut Vec<String>,
    created_as: &str,
) -> Result<&'v mut Map<String, Value>, InjectError> {
    if object.get(field).is_none_or(Value::is_null) {
        // (`annotations:` with nothing after it is null, which Kubernetes
        // reads as absent.)
        object.shift_remove(field);
        // metadata before spec, as every manifest has it.
        place(object, field, json!({}), &["spec"], &[]);
        if !created.iter().any(|c| c == created_as) {
            created.push(created_as.to_owned());
        }
    }
    object[field]
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed(format!("{created_as} is not a map")))
}

/// The list at `field` of `object`, made (and its making recorded) if
/// missing, at the place [`place`] finds. The caller has checked that an
/// existing one is a list.
fn list_field<'v>(
    object: &'v mut Map<String, Value>,
    field: &str,
    created: &mut Vec<String>,
    created_as: &str,
    (before, after): (&[&str], &[&str]),
) -> &'v mut Vec<Value> {
    if !object.get(field).is_some_and(Value::is_array) {
        object.shift_remove(field);
        place(object, field, json!([]), before, after);
        created.push(created_as.to_owned());
    }
    object[field].as_array_mut().expect("made a list above")
}

/// Inserts a new field where a person would have written it: just before
/// the first of `before` that is present, else just after the last of
/// `after` that is present, else at the end.
fn place(
    object: &mut Map<String, Value>,
    field: &str,
    value: Value,
    before: &[&str],
    after: &[&str],
) {
    let keys: Vec<&String> = object.keys().collect();
    let at = before
        .iter()
        .find_map(|b| keys.iter().position(|k| k == b))
        .or_else(|| {
            after
                .iter()
                .filter_map(|a| keys.iter().position(|k| k == a))
                .max()
                .map(|i| i + 1)
        })
        .unwrap_or(keys.len());
    object.shift_insert(at, field.to_owned(), value);
}
