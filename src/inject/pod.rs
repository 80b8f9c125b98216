//! The transformation: one pod (or pod template) and its `kubexit.io/`
//! annotations in, the coordinated pod out, or an error that says which
//! container is wrong and how to fix it. No I/O: the command line and the
//! admission webhook both call [`inject`] and [`uninject`]. Who does what,
//! and whether what is added fits beside the pod's own, is decided by
//! `plan`; this module makes the changes and keeps their record.
//!
//! What it adds: a graveyard volume (`emptyDir`, medium `Memory`) mounted
//! at `/graveyard` and a volume for the binary mounted at `/kubexit`
//! (before the pod's own volumes, as this project's manifests have always
//! listed them), an init container, first of all, that installs kubexit,
//! and on each coordinated container: `/kubexit/kubexit` before its
//! `command` (`args` untouched), `KUBEXIT_NAME` (the container's name),
//! `KUBEXIT_GRAVEYARD` and the settings' variables after its own
//! variables, and the two mounts after its own (the names and paths are
//! `additions`'). Under `kubexit.io/install: none` the images carry
//! kubexit: no init container, no volume for the binary and no mount of
//! it, and commands start with `kubexit`, found on the container's PATH.
//! Nothing else of the user's (resources, security
//! contexts, probes, unknown fields) is touched, but for two things: the
//! annotations the caller sets ([`Options::overrides`], the command line's
//! flags) replace the pod's own of the same keys, their old values kept in
//! the record; and a map or list kubexit adds to that stands in the pod as
//! `null` (`annotations:` with nothing after it) is replaced by a new one,
//! which Kubernetes reads the same (uninjected, it is left out). The
//! record of all that (see `record`) makes [`uninject`] exact and
//! re-injection idempotent: a pod that was injected is first taken back to
//! what it was, then injected again, so the same annotations give the same
//! pod.
//!
//! Every check happens before the first change, so an error never leaves
//! half a pod.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::additions::{
    BINARY_DIR, BINARY_VOLUME, GRAVEYARD_PATH, GRAVEYARD_VOLUME, INSTALL_CONTAINER, KUBEXIT_PATH,
    kubexit_word,
};
use super::images::{self, Images, Wanted};
use super::plan::{Command, PlanError, Pod, check_room, plan};
use super::record::{self, CommandChange, ContainerRecord, Record, RecordError};
use super::vocabulary::{self, AnnotationError, Annotations, Install, Setting, Value as Given};

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
    /// What the images of the containers without `command` run, by
    /// container, as the caller read them for this pod ([`wanted`]); a
    /// container missing here is refused as having no command.
    pub images: Images,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: default_image(),
            overrides: BTreeMap::new(),
            images: Images::new(),
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
    /// What will not work as the pod stands (a mesh proxy that will refuse
    /// the quit), for the caller to say.
    pub warnings: Vec<String>,
}

/// Why a pod cannot be injected. Each message names the container or the
/// annotation concerned and says what to change; the caller adds which
/// object it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("{0}")]
    Annotation(#[from] AnnotationError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Malformed(String),
    /// The caller could not read what a container's image runs.
    #[error("container {container}: {why}")]
    Lookup { container: String, why: String },
    #[error(
        "container {container} has no command, and its image {image} has neither ENTRYPOINT nor \
         CMD: it runs nothing; add `command` to the container"
    )]
    ImageRunsNothing { container: String, image: String },
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

/// The image of the container an injection added to install kubexit, as
/// its record names it; none when `template` is not injected or has none.
pub fn install_image(template: &Value) -> Option<String> {
    let record = Record::from_json(annotation(template, &record::key())?).ok()?;
    let installer = record.init_containers.first()?;
    template
        .pointer("/spec/initContainers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == installer.as_str())?
        .get("image")?
        .as_str()
        .map(str::to_owned)
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
    let Prepared {
        mut base,
        before,
        created,
        read,
    } = prepare(template, options)?;
    // Not injected: the pod as the user wrote it, whatever the flags said.
    let untouched = || -> Result<Injection, InjectError> {
        Ok(Injection {
            template: uninject(template)?,
            containers: Vec::new(),
            warnings: Vec::new(),
        })
    };
    if !read.enabled() {
        return untouched();
    }
    let install = read.install();
    let pod = Pod::of(&base)?;
    let plan = plan(&pod, &read)?;
    if plan.containers.is_empty() {
        return untouched();
    }
    check_room(&pod, &plan, install)?;
    let kubexit = kubexit_word(install);
    let commands = commands(&pod, &plan, options, kubexit)?;

    // Every check is done: from here on nothing fails.
    let installs = install != Install::InImage;
    let (added_volumes, mounts): (Vec<Value>, Vec<Value>) = if installs {
        (
            vec![
                json!({"name": GRAVEYARD_VOLUME, "emptyDir": {"medium": "Memory"}}),
                json!({"name": BINARY_VOLUME, "emptyDir": {}}),
            ],
            vec![
                json!({"mountPath": GRAVEYARD_PATH, "name": GRAVEYARD_VOLUME}),
                json!({"mountPath": BINARY_DIR, "name": BINARY_VOLUME}),
            ],
        )
    } else {
        (
            vec![json!({"name": GRAVEYARD_VOLUME, "emptyDir": {"medium": "Memory"}})],
            vec![json!({"mountPath": GRAVEYARD_PATH, "name": GRAVEYARD_VOLUME})],
        )
    };
    // The mounts are of the added volumes, by the same names.
    let volume_names: Vec<String> = added_volumes
        .iter()
        .filter_map(|volume| volume["name"].as_str().map(str::to_owned))
        .collect();
    let mut record = Record {
        kubexit: (kubexit != KUBEXIT_PATH).then(|| kubexit.to_owned()),
        init_containers: if installs {
            vec![INSTALL_CONTAINER.to_owned()]
        } else {
            Vec::new()
        },
        volumes: volume_names.clone(),
        created,
        annotations: before,
        ..Record::default()
    };
    let spec = base["spec"].as_object_mut().expect("checked above");
    if installs {
        let image = match read.pod(Setting::Image) {
            Some((_, Given::Text(image))) => image.clone(),
            _ => options.image.clone(),
        };
        let install_command = match install {
            Install::SelfInstall => json!([IMAGE_BINARY, "--install", BINARY_DIR]),
            _ => json!(["cp", IMAGE_BINARY, KUBEXIT_PATH]),
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
    }
    list_field(
        spec,
        "volumes",
        &mut record.created,
        "spec.volumes",
        (&["initContainers", "containers"], &[]),
    )
    .splice(0..0, added_volumes);
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
        let mut image = None;
        let command = match &commands[&name] {
            NewCommand::Wrap => {
                if let Some(words) = container.get_mut("command").and_then(Value::as_array_mut) {
                    words.insert(0, json!(kubexit));
                }
                CommandChange::Wrapped
            }
            NewCommand::Add {
                command,
                args,
                pinned,
            } => {
                image = pinned.clone();
                place(
                    container,
                    "command",
                    json!(command),
                    &["args"],
                    &["name", "image"],
                );
                if !args.is_empty() {
                    container.shift_remove("args");
                    place(container, "args", json!(args), &[], &["command"]);
                    created.push("args".to_owned());
                }
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
        .extend(mounts.iter().cloned());
        record.containers.insert(
            name,
            ContainerRecord {
                command,
                env: planned.env.iter().map(|(v, _)| v.clone()).collect(),
                volume_mounts: volume_names.clone(),
                created,
                image,
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
        warnings: plan.warnings,
    })
}

/// A template taken back to what the user wrote, with the caller's
/// annotations set: what [`inject`] and [`wanted`] read.
struct Prepared {
    base: Value,
    /// The annotations the caller set, with their values before.
    before: BTreeMap<String, Option<String>>,
    /// Of `metadata` and `metadata.annotations`, those made.
    created: Vec<String>,
    read: Annotations,
}

fn prepare(template: &Value, options: &Options) -> Result<Prepared, InjectError> {
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
    Ok(Prepared {
        base,
        before,
        created,
        read,
    })
}

/// The containers of `template` whose command must come from their image,
/// as [`inject`] with `options` would coordinate them: the images to read
/// before injecting. None when the pod cannot be injected for another
/// reason, which [`inject`] then says.
pub fn wanted(template: &Value, options: &Options) -> Vec<Wanted> {
    let Ok(prepared) = prepare(template, options) else {
        return Vec::new();
    };
    if !prepared.read.enabled() {
        return Vec::new();
    }
    let Ok(pod) = Pod::of(&prepared.base) else {
        return Vec::new();
    };
    let Ok(plan) = plan(&pod, &prepared.read) else {
        return Vec::new();
    };
    let platforms = images::platforms(&prepared.base);
    plan.order
        .iter()
        .filter_map(|name| match &plan.containers[name].command {
            Command::FromImage { image } => Some(Wanted {
                container: name.clone(),
                image: image.clone(),
                platforms: platforms.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// A coordinated container's new command, from the plan and, for one
/// without `command`, from what its image runs.
enum NewCommand {
    /// kubexit before its own.
    Wrap,
    /// A command made whole, the args added (when the container had none
    /// and the image's CMD goes there), and the image read for it.
    Add {
        command: Vec<String>,
        args: Vec<String>,
        pinned: Option<String>,
    },
}

/// Every coordinated container's new command, checked before anything
/// changes: a container whose image could not be read is refused here.
fn commands(
    pod: &Pod,
    plan: &super::plan::Plan,
    options: &Options,
    kubexit: &str,
) -> Result<BTreeMap<String, NewCommand>, InjectError> {
    let mut commands = BTreeMap::new();
    for (name, planned) in &plan.containers {
        let new = match &planned.command {
            Command::Own => NewCommand::Wrap,
            Command::Given(words) => NewCommand::Add {
                command: std::iter::once(kubexit.to_owned())
                    .chain(words.iter().cloned())
                    .collect(),
                args: Vec::new(),
                pinned: None,
            },
            Command::FromImage { image } => match options.images.get(name) {
                None => {
                    return Err(PlanError::NoCommand {
                        container: name.clone(),
                    }
                    .into());
                }
                Some(Err(why)) => {
                    return Err(InjectError::Lookup {
                        container: name.clone(),
                        why: why.clone(),
                    });
                }
                Some(Ok(run)) => {
                    let has_args = pod
                        .container(name)
                        .is_some_and(|c| c.get("args").is_some_and(|a| !a.is_null()));
                    let (command, args) = run.wrapped(kubexit, has_args).ok_or_else(|| {
                        InjectError::ImageRunsNothing {
                            container: name.clone(),
                            image: image.clone(),
                        }
                    })?;
                    NewCommand::Add {
                        command,
                        args,
                        pinned: Some(run.pinned.clone()),
                    }
                }
            },
        };
        commands.insert(name.clone(), new);
    }
    Ok(commands)
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
