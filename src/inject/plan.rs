//! Who does what in a pod: from its `kubexit.io/` annotations (see
//! `vocabulary`) and a few defaults that make the common pod a one-line
//! annotation, the variables and command of every coordinated container,
//! with every name checked against the pod.
//!
//! - **Coordinated containers** are the pod's `containers`, less those in
//!   `kubexit.io/skip` and those a mesh's injector added (see `mesh`):
//!   those are never wrapped nor counted as main containers, and an
//!   annotation that names one for anything but `skip` is refused. Init
//!   containers, native sidecars (init containers with
//!   `restartPolicy: Always`) included, are never wrapped: they run before
//!   the main containers, and the kubelet already stops native sidecars
//!   after them.
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
//! - **Main containers are coordinated with a mesh's proxy** that runs as a
//!   regular container: each waits for the proxy's readiness endpoint (its
//!   `KUBEXIT_BIRTH_PROBES`) and, in a pod that completes (`restartPolicy`
//!   `Never` or `OnFailure`), asks it to quit when it ends (`KUBEXIT_QUIT`,
//!   the mesh's preset). `kubexit.io/birth-probes` and `kubexit.io/quit`,
//!   pod-wide or a container's own, replace these defaults. A native-sidecar
//!   proxy gets nothing: the kubelet starts it first and stops it last.
//!   Under Linkerd, a proxy whose shutdown endpoint is off is warned about
//!   ([`Plan::warnings`]): the quit would be refused.
//! - **Several main containers that ask the same quit** (the mesh's, or a
//!   pod-wide `kubexit.io/quit`) each name the others in
//!   `KUBEXIT_QUIT_AFTER`: the last one out asks (see `quit::sharing`).
//! - Explicit `birth-deps`, `death-deps` and `death-policy` of a container
//!   replace these defaults for that container; every other setting is
//!   passed to the containers it concerns as its variable.
//!
//! [`plan`] reads and checks; it changes nothing. It goes in phases, each
//! a function below, and the first error found is the one reported, so
//! their order is the order in which a pod's mistakes are told:
//!
//! 1. [`Pod::of`] (the caller's) reads the pod's containers, init
//!    containers and volumes, and the mesh that injected it, if any;
//! 2. `classify` sorts the containers into coordinated, skipped,
//!    sidecars and main ones (`Roles`), checking every name in `skip`,
//!    `sidecars` and in a container's key (`Names`);
//! 3. `ready_sidecars` finds the sidecars that declare readiness, each
//!    probe checked or translated;
//! 4. `link` derives each container's birth and death dependencies and
//!    its `stop-after` (`Links`), explicit or by default, every name
//!    checked;
//! 5. `check_whole` checks what only the whole can show: no cycle of
//!    birth dependencies;
//! 6. `quits` gives each main container its quit, its own, the pod's or
//!    the mesh's, and the other mains that ask the same;
//! 7. `settle` makes each container's variables and says where its
//!    command comes from ([`Planned`], [`Command`]): its own, its
//!    `kubexit.io/entrypoint`, or its image, which the caller has read
//!    (`images`).
//!
//! [`check_room`] then checks that what the injection adds (`additions`)
//! does not collide with the pod's own: the graveyard always, the install
//! container and its volume unless the images carry kubexit.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::additions::{
    BINARY_DIR, BINARY_VOLUME, GRAVEYARD_PATH, GRAVEYARD_VOLUME, INSTALL_CONTAINER,
};
use super::kubelet_probe;
use super::mesh::{self, Mesh, MeshError};
use super::vocabulary::{self, Annotations, Install, ReadyProbe, Setting, Value as Given};
use crate::graveyard::restart::RestartPolicy;

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
        "annotation {key} names {name}, which {mesh}'s injector added: kubexit leaves it alone and \
         coordinates the main containers with it through its readiness and quit endpoints (see \
         docs/meshes.md); take {name} out of {key}"
    )]
    MeshContainer {
        key: String,
        name: String,
        mesh: &'static str,
    },
    #[error("{0}")]
    Mesh(#[from] MeshError),
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
    /// `spec.restartPolicy`, as the API server defaults it.
    restart_policy: RestartPolicy,
    /// The mesh whose injector ran on the pod.
    mesh: Option<Mesh>,
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
        let restart_policy = match spec.get("restartPolicy") {
            None | Some(Value::Null) => RestartPolicy::Always,
            Some(Value::String(policy)) => RestartPolicy::parse(policy)
                .map_err(|why| PlanError::Malformed(format!("spec.restartPolicy: {why}")))?,
            Some(_) => {
                return Err(PlanError::Malformed(
                    "spec.restartPolicy is not a string".into(),
                ));
            }
        };
        Ok(Pod {
            containers,
            init,
            volumes,
            restart_policy,
            mesh: mesh::recognise(template)?,
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

/// Where a container's wrapped command comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Its own `command`, which kubexit goes before.
    Own,
    /// `kubexit.io/entrypoint.NAME`: no `command`, and this is its image's
    /// ENTRYPOINT.
    Given(Vec<String>),
    /// No `command` and no annotation: what the image `image` runs, which
    /// its registry knows (`images`).
    FromImage { image: String },
}

/// What one container gets.
pub struct Planned {
    pub command: Command,
    /// The variables, in order.
    pub env: Vec<(String, String)>,
}

pub struct Plan {
    /// The coordinated containers, in the pod's order.
    pub order: Vec<String>,
    pub containers: BTreeMap<String, Planned>,
    /// What will not work as the pod stands, though kubexit can inject it:
    /// said on standard error, and in the webhook's admission warnings.
    pub warnings: Vec<String>,
}

/// Decides every container's settings, checking every name: the phases
/// of the module's essay, in order.
pub fn plan(pod: &Pod, read: &Annotations) -> Result<Plan, PlanError> {
    let names = Names::of(pod, read);
    let roles = classify(read, &names)?;
    let ready = ready_sidecars(pod, read, &roles)?;
    let links = link(read, &names, &roles, &ready)?;
    check_whole(&roles, &links)?;
    let defaults = MeshDefaults::of(pod);
    let quits = quits(read, &roles, &defaults);
    let waited_for: BTreeSet<&String> = links.values().flat_map(|l| &l.birth).collect();
    let mut containers = BTreeMap::new();
    for name in &roles.coordinated {
        let container = Container {
            name,
            sidecar: roles.is_sidecar(name),
            links: &links[name],
            waited_for: waited_for.contains(name),
            quit: quits.get(name),
            birth_probe: defaults.birth_probe,
        };
        containers.insert(name.clone(), settle(pod, read, &container)?);
    }
    let mut warnings = Vec::new();
    if !quits.is_empty()
        && let Some(refused) = pod.mesh.as_ref().and_then(Mesh::quit_refused)
    {
        warnings.push(refused);
    }
    Ok(Plan {
        order: roles.coordinated,
        containers,
        warnings,
    })
}

/// The names of the pod's containers, and the check that a name given in
/// an annotation is one of them.
struct Names<'p> {
    pod: &'p Pod<'p>,
    /// Every container, in the pod's order.
    all: Vec<String>,
    /// Those in `kubexit.io/skip`.
    skip: Vec<String>,
}

impl<'p> Names<'p> {
    fn of(pod: &'p Pod<'p>, read: &Annotations) -> Names<'p> {
        Names {
            pod,
            all: pod.names(),
            skip: names_in(read, Setting::Skip),
        }
    }

    /// The mesh whose injector added `name`, if one did.
    fn mesh_of(&self, name: &str) -> Option<&'p Mesh> {
        self.pod.mesh.as_ref().filter(|mesh| mesh.owns(name))
    }

    /// Ok when `name`, given in annotation `key`, is a container of the
    /// pod, and one kubexit coordinates if `coordinated_only`; otherwise
    /// the error that says what `name` is instead.
    fn check(&self, key: &str, name: &str, coordinated_only: bool) -> Result<(), PlanError> {
        if self.all.iter().any(|c| c == name) {
            if coordinated_only && let Some(mesh) = self.mesh_of(name) {
                return Err(PlanError::MeshContainer {
                    key: key.to_owned(),
                    name: name.to_owned(),
                    mesh: mesh.kind.name(),
                });
            }
            if coordinated_only && self.skip.iter().any(|s| s == name) {
                return Err(PlanError::Skipped {
                    key: key.to_owned(),
                    name: name.to_owned(),
                });
            }
            return Ok(());
        }
        if let Some((_, native)) = self.pod.init.iter().find(|(n, _)| n == name) {
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
            hint: vocabulary::nearest(name, self.all.iter().map(String::as_str)).map(str::to_owned),
            containers: self.all.clone(),
        })
    }

    /// Checks the dependencies `deps` that annotation `key` gives
    /// `container`: each a coordinated container, none the container
    /// itself.
    fn check_dependencies(
        &self,
        key: &str,
        container: &str,
        deps: &[String],
    ) -> Result<(), PlanError> {
        for dep in deps {
            self.check(key, dep, true)?;
            if dep == container {
                return Err(PlanError::SelfDependency {
                    key: key.to_owned(),
                    name: container.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The names a pod-wide list setting gives (`skip`, `sidecars`).
fn names_in(read: &Annotations, setting: Setting) -> Vec<String> {
    read.pod(setting)
        .map(|(_, v)| v.names().to_vec())
        .unwrap_or_default()
}

/// The coordinated containers by role.
struct Roles {
    /// The pod's containers less the skipped ones and the mesh's, in the
    /// pod's order.
    coordinated: Vec<String>,
    /// `kubexit.io/sidecars`, in its order.
    sidecars: Vec<String>,
    /// The coordinated containers that are not sidecars, in the pod's
    /// order.
    mains: Vec<String>,
}

impl Roles {
    fn is_sidecar(&self, name: &str) -> bool {
        self.sidecars.iter().any(|s| s == name)
    }
}

/// Phase 2: the containers sorted by role, once every name in `skip`,
/// `sidecars` and a container's key is known to be one of the pod's; at
/// least one main container when any is coordinated.
fn classify(read: &Annotations, names: &Names) -> Result<Roles, PlanError> {
    let sidecars = names_in(read, Setting::Sidecars);
    for name in &names.skip {
        names.check(&Setting::Skip.pod_key(), name, false)?;
    }
    for name in &sidecars {
        names.check(&Setting::Sidecars.pod_key(), name, true)?;
    }
    for (container, key) in read.named_containers() {
        names.check(key, container, true)?;
    }
    let coordinated: Vec<String> = names
        .all
        .iter()
        .filter(|c| !names.skip.contains(c) && names.mesh_of(c).is_none())
        .cloned()
        .collect();
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
    Ok(Roles {
        coordinated,
        sidecars,
        mains,
    })
}

/// A container's readiness as its own annotation declares it, if it does.
fn declared(read: &Annotations, name: &str) -> Option<ReadyProbe> {
    match read.own(name, Setting::ReadyProbe) {
        Some((_, Given::Ready(probe))) => Some(probe.clone()),
        _ => None,
    }
}

/// A container's readiness probe in kubexit's syntax: declared, or
/// translated from its own readinessProbe; none when it has neither (or
/// declares `none`).
fn readiness(pod: &Pod, read: &Annotations, name: &str) -> Result<Option<String>, PlanError> {
    match declared(read, name) {
        Some(ReadyProbe::Off) => Ok(None),
        Some(ReadyProbe::Probe(probe)) => Ok(Some(probe)),
        None => {
            let container = Value::Object(pod.container(name).cloned().unwrap_or_default());
            kubelet_probe::readiness(&container).map_err(|why| PlanError::ProbeNotTranslatable {
                container: name.to_owned(),
                why,
            })
        }
    }
}

/// Phase 3: the sidecars that declare readiness, in `sidecars`' order:
/// the main containers' default birth dependencies.
fn ready_sidecars(pod: &Pod, read: &Annotations, roles: &Roles) -> Result<Vec<String>, PlanError> {
    let mut ready = Vec::new();
    for sidecar in &roles.sidecars {
        if readiness(pod, read, sidecar)?.is_some() {
            ready.push(sidecar.clone());
        }
    }
    Ok(ready)
}

/// One coordinated container's ties to the others.
struct Links {
    /// Whom it waits for before it starts.
    birth: Vec<String>,
    /// Whose death stops it.
    death: Vec<String>,
    /// Whom its stop waits for (`kubexit.io/stop-after`), when given.
    stop_after: Option<Vec<String>>,
}

/// Phase 4: every coordinated container's links: its own annotations
/// where it has them, else the defaults.
fn link(
    read: &Annotations,
    names: &Names,
    roles: &Roles,
    ready_sidecars: &[String],
) -> Result<BTreeMap<String, Links>, PlanError> {
    let mut links = BTreeMap::new();
    for name in &roles.coordinated {
        // A container's own annotation, its names checked.
        let given = |setting: Setting| -> Result<Option<Vec<String>>, PlanError> {
            let Some((key, value)) = read.own(name, setting) else {
                return Ok(None);
            };
            names.check_dependencies(key, name, value.names())?;
            Ok(Some(value.names().to_vec()))
        };
        // The defaults: a main container waits for the sidecars that
        // declare readiness; a sidecar dies with the main containers.
        let (birth, death) = if roles.is_sidecar(name) {
            (Vec::new(), roles.mains.clone())
        } else {
            (ready_sidecars.to_vec(), Vec::new())
        };
        let birth = given(Setting::BirthDeps)?.unwrap_or(birth);
        let death = given(Setting::DeathDeps)?.unwrap_or(death);
        let stop_after = given(Setting::StopAfter)?;
        links.insert(
            name.clone(),
            Links {
                birth,
                death,
                stop_after,
            },
        );
    }
    Ok(links)
}

/// Phase 5: what only the whole pod can show. Birth dependencies must not
/// form a cycle: nothing in it would start.
fn check_whole(roles: &Roles, links: &BTreeMap<String, Links>) -> Result<(), PlanError> {
    if let Some(cycle) = birth_cycle(&roles.coordinated, links) {
        return Err(PlanError::BirthCycle { cycle });
    }
    Ok(())
}

/// What the main containers get, untold, beside a mesh's regular proxy.
struct MeshDefaults {
    /// The proxy's readiness, their birth probe.
    birth_probe: Option<&'static str>,
    /// The proxy's quit preset, in a pod that completes: under
    /// `restartPolicy: Always` a main that ends is started again and needs
    /// the proxy still.
    quit: Option<&'static str>,
}

impl MeshDefaults {
    fn of(pod: &Pod) -> MeshDefaults {
        let kind = pod
            .mesh
            .as_ref()
            .filter(|mesh| mesh.regular_proxy().is_some())
            .map(|mesh| mesh.kind);
        MeshDefaults {
            birth_probe: kind.map(mesh::Kind::readiness),
            quit: kind
                .filter(|_| pod.restart_policy != RestartPolicy::Always)
                .map(mesh::Kind::quit),
        }
    }
}

/// One main container's quit, and the other main containers that ask the
/// same endpoints (its `KUBEXIT_QUIT_AFTER`).
struct Quit {
    endpoints: String,
    after: Vec<String>,
}

/// Phase 6: each main container's quit: its own, else the pod-wide one,
/// else the mesh's; mains that ask the same share it, the last one out
/// asking.
fn quits(read: &Annotations, roles: &Roles, defaults: &MeshDefaults) -> BTreeMap<String, Quit> {
    let mut asked: Vec<(&String, String)> = Vec::new();
    for main in &roles.mains {
        let given = match read.for_container(main, Setting::Quit) {
            Some((_, Given::Text(endpoints))) => Some(endpoints.clone()),
            _ => defaults.quit.map(str::to_owned),
        };
        if let Some(endpoints) = given {
            asked.push((main, endpoints));
        }
    }
    asked
        .iter()
        .map(|(main, endpoints)| {
            let after = asked
                .iter()
                .filter(|(other, same)| other != main && same == endpoints)
                .map(|(other, _)| (*other).clone())
                .collect();
            (
                (*main).clone(),
                Quit {
                    endpoints: endpoints.clone(),
                    after,
                },
            )
        })
        .collect()
}

/// What the last phase knows of one coordinated container.
struct Container<'a> {
    name: &'a String,
    sidecar: bool,
    links: &'a Links,
    /// Whether another container waits for it: then its readiness probe,
    /// declared or translated, is set.
    waited_for: bool,
    /// Its quit, for a main container that asks one.
    quit: Option<&'a Quit>,
    /// The mesh proxy's readiness, a main container's birth probe unless
    /// an annotation gives its own.
    birth_probe: Option<&'static str>,
}

/// Phase 7: one container's command (when it has none) and variables.
fn settle(pod: &Pod, read: &Annotations, container: &Container) -> Result<Planned, PlanError> {
    let Container {
        name,
        sidecar,
        links,
        waited_for,
        quit,
        birth_probe,
    } = *container;
    let command = command(pod, read, name)?;
    let text = |setting: Setting| match read.for_container(name, setting) {
        Some((_, Given::Text(text))) => Some(text.clone()),
        _ => None,
    };
    let own = |setting: Setting| read.own(name, setting).is_some();
    // A main container takes the pod-wide quit and birth probes, else the
    // mesh's; a sidecar only its own.
    let own_or_main = |setting: Setting| match read.own(name, setting) {
        Some((_, Given::Text(value))) => Some(value.clone()),
        _ if !sidecar => text(setting),
        _ => None,
    };
    let (quit, quit_after) = match quit {
        Some(quit) => (Some(quit.endpoints.clone()), quit.after.join(",")),
        None => (own_or_main(Setting::Quit), String::new()),
    };
    let birth_probes = own_or_main(Setting::BirthProbes)
        .or_else(|| birth_probe.filter(|_| !sidecar).map(str::to_owned));
    let (births, deaths) = (&links.birth, &links.death);
    let mut env: Vec<(String, String)> = vec![
        ("KUBEXIT_NAME".into(), name.clone()),
        ("KUBEXIT_GRAVEYARD".into(), GRAVEYARD_PATH.into()),
    ];
    // Where the kubelet restarts containers in place, a dependency's end
    // may not be for good: those that depend on one are told the policy.
    if pod.restart_policy != RestartPolicy::Never && !(births.is_empty() && deaths.is_empty()) {
        env.push((
            "KUBEXIT_RESTART_POLICY".into(),
            pod.restart_policy.to_string(),
        ));
    }
    for setting in Setting::all() {
        let Some(variable) = setting.variable() else {
            continue;
        };
        let value = match setting {
            Setting::BirthDeps => Some(births.join(",")).filter(|v| !v.is_empty()),
            Setting::DeathDeps => Some(deaths.join(",")).filter(|v| !v.is_empty()),
            Setting::DeathPolicy => text(setting).or_else(|| {
                let implied = sidecar && !own(Setting::DeathDeps);
                (implied && deaths.len() > 1).then(|| "all".to_owned())
            }),
            Setting::BirthProbes => birth_probes.clone(),
            Setting::BirthTimeout => text(setting)
                .filter(|_| own(setting) || !births.is_empty() || birth_probes.is_some()),
            Setting::ReadyProbe => match declared(read, name) {
                Some(ReadyProbe::Probe(probe)) => Some(probe),
                Some(ReadyProbe::Off) => None,
                None if waited_for => readiness(pod, read, name)?,
                None => None,
            },
            Setting::StopAfter => links
                .stop_after
                .as_ref()
                .map(|n| n.join(","))
                .filter(|v| !v.is_empty()),
            Setting::StopAfterTimeout => {
                text(setting).filter(|_| own(setting) || links.stop_after.is_some())
            }
            Setting::Quit => quit.clone(),
            Setting::QuitTimeout => text(setting).filter(|_| own(setting) || quit.is_some()),
            _ => text(setting),
        };
        if let Some(value) = value {
            env.push((variable.to_owned(), value));
        }
        if setting == Setting::Quit && !quit_after.is_empty() {
            env.push(("KUBEXIT_QUIT_AFTER".into(), quit_after.clone()));
        }
    }
    Ok(Planned { command, env })
}

/// Where a container's command comes from: its own, which must not
/// already run kubexit; else `kubexit.io/entrypoint`; else its image.
fn command(pod: &Pod, read: &Annotations, name: &str) -> Result<Command, PlanError> {
    let container = pod.container(name).expect("a container of the pod");
    match (
        container.get("command"),
        read.own(name, Setting::Entrypoint),
    ) {
        (Some(Value::Array(words)), entry) => {
            if entry.is_some() {
                return Err(PlanError::EntrypointWithCommand {
                    container: name.to_owned(),
                });
            }
            if let Some(word) = words.first().and_then(Value::as_str)
                && (word == "kubexit" || word.ends_with("/kubexit"))
            {
                return Err(PlanError::AlreadyWrapped {
                    container: name.to_owned(),
                    word: word.to_owned(),
                });
            }
            Ok(Command::Own)
        }
        (Some(_), _) => Err(PlanError::Malformed(format!(
            "container {name}: command is not a list"
        ))),
        (None, Some((_, Given::Command(words)))) => Ok(Command::Given(words.clone())),
        (None, _) => match container.get("image").and_then(Value::as_str) {
            Some(image) if !image.trim().is_empty() => Ok(Command::FromImage {
                image: image.trim().to_owned(),
            }),
            _ => Err(PlanError::NoCommand {
                container: name.to_owned(),
            }),
        },
    }
}

/// A birth-dependency cycle, as the names along it (first repeated last).
fn birth_cycle(order: &[String], links: &BTreeMap<String, Links>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        name: &str,
        links: &BTreeMap<String, Links>,
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
        for dep in links.get(name).into_iter().flat_map(|l| &l.birth) {
            if let Some(cycle) = visit(dep, links, marks, path) {
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
        .find_map(|name| visit(name, links, &mut marks, &mut Vec::new()))
}

/// The names and paths kubexit adds must be free: the graveyard's, and
/// under an install container the container's, its volume's and its
/// mount's.
pub fn check_room(pod: &Pod, plan: &Plan, install: Install) -> Result<(), PlanError> {
    let installs = install != Install::InImage;
    let volumes: &[&str] = if installs {
        &[GRAVEYARD_VOLUME, BINARY_VOLUME]
    } else {
        &[GRAVEYARD_VOLUME]
    };
    for &volume in volumes {
        if pod.volumes.iter().any(|v| v == volume) {
            return Err(PlanError::NameTaken {
                what: "a volume",
                name: volume.to_owned(),
            });
        }
    }
    let containers = pod.names();
    if installs
        && (pod.init.iter().any(|(n, _)| n == INSTALL_CONTAINER)
            || containers.iter().any(|c| c == INSTALL_CONTAINER))
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
            if path == GRAVEYARD_PATH || (installs && path == BINARY_DIR) {
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
