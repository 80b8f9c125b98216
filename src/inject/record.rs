//! The record an injection leaves on the pod (`kubexit.io/injected`), and
//! the undoing it makes exact.
//!
//! Istio's `sidecar.istio.io/status` showed the way: a small JSON value in
//! an annotation naming what was added, so that a later tool can take out
//! exactly that and nothing else. kubexit's record names:
//!
//! - the init containers and volumes it added (by name; the injection
//!   refuses a pod where those names are already taken, so a name is proof);
//! - the first word it put before commands (`kubexit`), when it is not the
//!   installed `/kubexit/kubexit` (`kubexit.io/install: none`: the images
//!   carry kubexit, found on their PATH);
//! - per coordinated container, whether `command` was wrapped (the first
//!   word added) or added whole (`kubexit.io/entrypoint`, or the image's
//!   ENTRYPOINT read from its registry, whose `args` may be added too: the
//!   image's CMD), the image as read, pinned by its digest (`image`), and
//!   the variables and volume mounts it appended (by name);
//! - every list or map that did not exist before (`created`), so that an
//!   emptied one is removed rather than left as `[]`;
//! - the annotations the injector set for the caller (the command line's
//!   flags), with their values before (`null` for absent).
//!
//! Of what the user wrote, only the old values of the annotations the
//! caller's flags replaced are copied into the record, so it stays small;
//! and the added entries are whole entries of the user's lists (appended,
//! or put first), so taking them out by name gives back the user's lists
//! in their order. [`undo`] does that; it is lenient about what is already
//! gone and strict about what it would have to guess (a command that no
//! longer starts with kubexit).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::additions::KUBEXIT_PATH;
use super::vocabulary::Setting;

/// How a container's command was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandChange {
    /// kubexit's path put before the user's command.
    Wrapped,
    /// `command` did not exist; it was made from `kubexit.io/entrypoint`
    /// or from the image's config.
    Added,
}

/// What was added to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub command: CommandChange,
    pub env: Vec<String>,
    pub volume_mounts: Vec<String>,
    /// Of `env`, `volumeMounts` and `args` (the image's CMD), those that
    /// did not exist.
    pub created: Vec<String>,
    /// The image whose ENTRYPOINT and CMD were read for the command,
    /// pinned by digest (`IMAGE@sha256:...`).
    pub image: Option<String>,
}

/// Everything one injection changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The first word of wrapped commands when it is not
    /// [`KUBEXIT_PATH`].
    pub kubexit: Option<String>,
    pub init_containers: Vec<String>,
    pub volumes: Vec<String>,
    /// Of `metadata`, `metadata.annotations`, `spec.initContainers` and
    /// `spec.volumes`, those that did not exist.
    pub created: Vec<String>,
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Annotations set for the caller, and their values before.
    pub annotations: BTreeMap<String, Option<String>>,
}

/// A record that cannot be read, or a pod changed so that it cannot be
/// undone without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// The record's annotation key.
pub fn key() -> String {
    Setting::Injected.pod_key()
}

impl Record {
    pub fn to_json(&self) -> String {
        let containers: Map<String, Value> = self
            .containers
            .iter()
            .map(|(name, c)| {
                let command = match c.command {
                    CommandChange::Wrapped => "wrapped",
                    CommandChange::Added => "added",
                };
                let mut fields = Map::new();
                fields.insert("command".into(), json!(command));
                put(&mut fields, "env", json!(c.env));
                put(&mut fields, "volumeMounts", json!(c.volume_mounts));
                put(&mut fields, "created", json!(c.created));
                if let Some(image) = &c.image {
                    fields.insert("image".into(), json!(image));
                }
                (name.clone(), Value::Object(fields))
            })
            .collect();
        let mut record = Map::new();
        record.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        if let Some(word) = &self.kubexit {
            record.insert("kubexit".into(), json!(word));
        }
        put(&mut record, "initContainers", json!(self.init_containers));
        put(&mut record, "volumes", json!(self.volumes));
        put(&mut record, "created", json!(self.created));
        put(&mut record, "containers", Value::Object(containers));
        put(&mut record, "annotations", json!(self.annotations));
        Value::Object(record).to_string()
    }

    /// The first word of the commands this record wrapped.
    pub fn kubexit(&self) -> &str {
        self.kubexit.as_deref().unwrap_or(KUBEXIT_PATH)
    }

    pub fn from_json(text: &str) -> Result<Record, RecordError> {
        let bad = |what: &str| {
            RecordError(format!(
                "annotation {} is not a record kubexit wrote ({what}); remove it, and what it added, by hand",
                key()
            ))
        };
        let value: Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
        let strings = |v: &Value, field: &str| -> Result<Vec<String>, RecordError> {
            match v.get(field) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad(field)))
                    .collect(),
                Some(_) => Err(bad(field)),
            }
        };
        let kubexit = match value.get("kubexit") {
            None => None,
            Some(Value::String(word)) if !word.is_empty() => Some(word.clone()),
            Some(_) => return Err(bad("kubexit")),
        };
        let mut record = Record {
            kubexit,
            init_containers: strings(&value, "initContainers")?,
            volumes: strings(&value, "volumes")?,
            created: strings(&value, "created")?,
            ..Record::default()
        };
        if let Some(containers) = value.get("containers") {
            let containers = containers.as_object().ok_or_else(|| bad("containers"))?;
            for (name, c) in containers {
                let command = match c.get("command").and_then(Value::as_str) {
                    Some("wrapped") => CommandChange::Wrapped,
                    Some("added") => CommandChange::Added,
                    _ => return Err(bad("command")),
                };
                record.containers.insert(
                    name.clone(),
                    ContainerRecord {
                        command,
                        env: strings(c, "env")?,
                        volume_mounts: strings(c, "volumeMounts")?,
                        created: strings(c, "created")?,
                        image: match c.get("image") {
                            None => None,
                            Some(Value::String(image)) => Some(image.clone()),
                            Some(_) => return Err(bad("image")),
                        },
                    },
                );
            }
        }
        if let Some(annotations) = value.get("annotations") {
            let annotations = annotations.as_object().ok_or_else(|| bad("annotations"))?;
            for (k, v) in annotations {
                let before = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(bad("annotations")),
                };
                record.annotations.insert(k.clone(), before);
            }
        }
        Ok(record)
    }
}

/// Adds a field to the record unless it is empty: a short record is
/// easier to read in `kubectl get -o yaml`.
fn put(record: &mut Map<String, Value>, field: &str, value: Value) {
    let empty = match &value {
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    };
    if !empty {
        record.insert(field.to_owned(), value);
    }
}

/// Takes out of `template` (a pod or pod template: `metadata` and `spec`)
/// what `record` says was added, and the record itself. The annotations
/// the injector set are left as they are: [`restore_annotations`] is the
/// second half of a full undo, which a re-injection skips.
pub fn undo(template: &mut Value, record: &Record) -> Result<(), RecordError> {
    if let Some(annotations) = template
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(&key());
    }
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| RecordError("it has no spec".into()))?;
    remove_named(
        spec,
        "initContainers",
        &record.init_containers,
        &record.created,
        "spec.initContainers",
    );
    remove_named(
        spec,
        "volumes",
        &record.volumes,
        &record.created,
        "spec.volumes",
    );
    let kubexit = record.kubexit();
    for (name, added) in &record.containers {
        let Some(container) = spec
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name.as_str()))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        match added.command {
            CommandChange::Added => {
                container.shift_remove("command");
                if added.created.iter().any(|c| c == "args") {
                    container.shift_remove("args");
                }
            }
            CommandChange::Wrapped => {
                let command = container.get_mut("command").and_then(Value::as_array_mut);
                match command {
                    Some(words) if words.first().and_then(Value::as_str) == Some(kubexit) => {
                        words.remove(0);
                    }
                    _ => {
                        return Err(RecordError(format!(
                            "container {name}: its command no longer starts with {kubexit}, \
                             so what kubexit added cannot be told apart; restore it by hand"
                        )));
                    }
                }
            }
        }
        remove_named(container, "env", &added.env, &added.created, "env");
        remove_named(
            container,
            "volumeMounts",
            &added.volume_mounts,
            &added.created,
            "volumeMounts",
        );
    }
    Ok(())
}

/// Sets the annotations the injector changed back to their values before,
/// and removes `metadata.annotations` and `metadata` if the injection made
/// them and they are empty again.
pub fn restore_annotations(template: &mut Value, record: &Record) {
    let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        for (k, before) in &record.annotations {
            match before {
                Some(value) => {
                    annotations.insert(k.clone(), Value::String(value.clone()));
                }
                None => {
                    annotations.shift_remove(k);
                }
            }
        }
    }
    drop_if_made_and_empty(
        metadata,
        "annotations",
        &record.created,
        "metadata.annotations",
    );
    if record.created.iter().any(|c| c == "metadata")
        && metadata.is_empty()
        && let Some(object) = template.as_object_mut()
    {
        object.shift_remove("metadata");
    }
}

/// Removes from the list `field` of `object` the entries whose `name` is in
/// `names`, then the list itself if it was `created` and is now empty.
fn remove_named(
    object: &mut Map<String, Value>,
    field: &str,
    names: &[String],
    created: &[String],
    created_as: &str,
) {
    if let Some(items) = object.get_mut(field).and_then(Value::as_array_mut) {
        items.retain(|item| {
            !item["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
    }
    drop_if_made_and_empty(object, field, created, created_as);
}

fn drop_if_made_and_empty(
    object: &mut Map<String, Value>,
    field: &str,
    created: &[String],
    created_as: &str,
) {
    let empty = match object.get(field) {
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.is_empty(),
        _ => false,
    };
    if empty && created.iter().any(|c| c == created_as) {
        object.shift_remove(field);
    }
}
