//! Who does what in a pod: from its `kubexit.io/` annotations (see
//! `vocabulary`) and a few defaults that make the common pod a one-line
//! annotation, the variables and command of every coordinated container,
//! with every name checked against the pod.
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
//! [`plan`] reads and checks; it changes nothing. [`check_room`] checks
//! that what the injection adds does not collide with the pod's own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::kubelet_probe;
use super::vocabulary::{self, Annotations, ReadyProbe, Setting, Value as Given};

/// The graveyard volume and where it is mounted.
pub const GRAVEYARD_VOLUME: &str = "graveyard";
pub const GRAVEYARD_PATH: &str = "/graveyard";
/// The volume kubexit is installed into, and the init container that does it.
pub const BINARY_VOLUME: &str = "kubexit";
pub const BINARY_DIR: &str = "/kubexit";
pub const INSTALL_CONTAINER: &str = "kubexit";

/// Why the pod's containers cannot be coordinated as asked. Each message
/// names the container or the annotation concerned and says what to
/// change; the caller adds which object it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
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
    Malformed(String),
}

fn near(hint: &Option<String>, containers: &[String]) -> String {
    match hint {
        Some(near) => format!("; did you mean {near}?"),
        None => format!(" (its containers: {})", containers.join(", ")),
    }
}

/// The parts of a pod the plan reads.
pub struct Pod<'a> {
    containers: Vec<&'a Map<String, Value>>,
    /// Init container names, each with whether it is a native sidecar.
    init: Vec<(String, bool)>,
    volumes: Vec<String>,
}

impl<'a> Pod<'a> {
    pub fn of(template: &'a Value) -> Result<Pod<'a>, PlanError> {
        let spec = &template["spec"];
        let named = |field: &str| -> Result<Vec<&'a Map<String, Value>>, PlanError> {
            let Some(items) = spec.get(field) else {
                return Ok(Vec::new());
            };
            let items = items
                .as_array()
                .ok_or_else(|| PlanError::Malformed(format!("spec.{field} is not a list")))?;
            items
                .iter()
                .map(|item| {
                    item.as_object()
                        .filter(|c| c.get("name").is_some_and(Value::is_string))
                        .ok_or_else(|| {
                            PlanError::Malformed(format!(
                                "spec.{field} has an entry without a name"
                            ))
                        })
                })
                .collect()
        };
        let containers = named("containers")?;
        if containers.is_empty() {
            return Err(PlanError::Malformed("spec.containers is empty".into()));
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

    pub fn names(&self) -> Vec<String> {
        self.containers
            .iter()
            .map(|c| name_of(c).to_owned())
            .collect()
    }

    pub fn container(&self, name: &str) -> Option<&'a Map<String, Value>> {
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
pub struct Planned {
    /// The command when the container has none (`kubexit.io/entrypoint`).
    pub entrypoint: Vec<String>,
    /// The variables, in order.
    pub env: Vec<(String, String)>,
}

pub struct Plan {
    /// The coordinated containers, in the pod's order.
    pub order: Vec<String>,
    pub containers: BTreeMap<String, Planned>,
}

/// Decides every container's settings, checking every name.
pub fn plan(pod: &Pod, read: &Annotations) -> Result<Plan, PlanError> {
    let all = pod.names();
    let names_of = |setting: Setting| -> Vec<String> {
        read.pod(setting)
            .map(|(_, v)| v.names().to_vec())
            .unwrap_or_default()
    };
    let skip = names_of(Setting::Skip);
    let sidecars = names_of(Setting::Sidecars);
    // A name in a list must be a container that kubexit may coordinate.
    let check = |key: &str, name: &str, coordinated_only: bool| -> Result<(), PlanError> {
        if all.iter().any(|c| c == name) {
            if coordinated_only && skip.iter().any(|s| s == name) {
                return Err(PlanError::Skipped {
                    key: key.to_owned(),
                    name: name.to_owned(),
                });
            }
            return Ok(());
        }
        if let Some((_, native)) = pod.init.iter().find(|(n, _)| n == name) {
            return Err(if *native {
                PlanError::NativeSidecar {
                    key: key.to_owned(),
                    name: name.to_owned(),
                }
            } else {
                PlanError::InitContainer {
                    key: key.to_owned(),
                    name: name.to_owned(),
                }
            });
        }
        Err(PlanError::NotAContainer {
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
        return Err(PlanError::NoMainContainer {
            sidecars: coordinated,
        });
    }

    // Readiness: declared, or translated from the container's own probe.
    let declared = |name: &str| match read.own(name, Setting::ReadyProbe) {
        Some((_, Given::Ready(probe))) => Some(probe.clone()),
        _ => None,
    };
    let readiness = |name: &str| -> Result<Option<String>, PlanError> {
        match declared(name) {
            Some(ReadyProbe::Off) => Ok(None),
            Some(ReadyProbe::Probe(probe)) => Ok(Some(probe)),
            None => {
                let container = Value::Object(pod.container(name).cloned().unwrap_or_default());
                kubelet_probe::readiness(&container).map_err(|why| {
                    PlanError::ProbeNotTranslatable {
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
                            return Err(PlanError::SelfDependency {
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
                    return Err(PlanError::SelfDependency {
                        key: key.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    if let Some(cycle) = birth_cycle(&coordinated, &birth) {
        return Err(PlanError::BirthCycle { cycle });
    }
    let waited_for: BTreeSet<&String> = birth.values().flatten().collect();
    if mains.len() > 1 && read.pod(Setting::Quit).is_some() {
        let unset = mains.iter().any(|m| read.own(m, Setting::Quit).is_none());
        if unset {
            return Err(PlanError::QuitWithSeveralMains { mains });
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
                    return Err(PlanError::EntrypointWithCommand {
                        container: name.clone(),
                    });
                }
                if let Some(word) = words.first().and_then(Value::as_str)
                    && (word == "kubexit" || word.ends_with("/kubexit"))
                {
                    return Err(PlanError::AlreadyWrapped {
                        container: name.clone(),
                        word: word.to_owned(),
                    });
                }
                Vec::new()
            }
            (Some(_), _) => {
                return Err(PlanError::Malformed(format!(
                    "container {name}: command is not a list"
                )));
            }
            (None, Some((_, Given::Command(words)))) => words.clone(),
            (None, _) => {
                return Err(PlanError::NoCommand {
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
pub fn check_room(pod: &Pod, plan: &Plan) -> Result<(), PlanError> {
    for volume in [GRAVEYARD_VOLUME, BINARY_VOLUME] {
        if pod.volumes.iter().any(|v| v == volume) {
            return Err(PlanError::NameTaken {
                what: "a volume",
                name: volume.to_owned(),
            });
        }
    }
    let containers = pod.names();
    if pod.init.iter().any(|(n, _)| n == INSTALL_CONTAINER)
        || containers.iter().any(|c| c == INSTALL_CONTAINER)
    {
        return Err(PlanError::NameTaken {
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
                return Err(PlanError::MountTaken {
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
                return Err(PlanError::VariableTaken {
                    container: name.clone(),
                    variable: variable.to_owned(),
                });
            }
        }
    }
    Ok(())
}
