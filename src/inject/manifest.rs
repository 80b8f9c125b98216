//! Manifests: streams of Kubernetes objects in YAML or JSON, the pod
//! templates inside them, and writing them back.
//!
//! What `kubectl apply -f` accepts is accepted: YAML streams of several
//! documents (empty ones dropped, as kubectl drops them), JSON objects one
//! after another, and `List` objects (`kind: List`, or any `...List` with
//! `items`), whose items are handled one by one. A stream that starts with
//! `{` is JSON; anything else is YAML.
//!
//! Objects keep their fields in the order they were written (serde_json's
//! `preserve_order`), so a manifest comes back recognisable and `uninject`
//! gives back the same text for a manifest kubexit wrote. YAML is written
//! with YAML 1.1's quoting (strings like `on`, `0755` or `1e3` quoted), as
//! kubectl's YAML reader is 1.1; multi-line strings as literal blocks.
//!
//! The pod template is found by kind: a `Pod` is its own template; `Job`,
//! `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet` and
//! `ReplicationController` hold it at `spec.template`, `CronJob` at
//! `spec.jobTemplate.spec.template`. Every other object passes through as
//! it is (as an object: a YAML document comes back without its comments,
//! in kubexit's layout). The annotations that drive injection belong on the pod
//! template, where the webhook sees them too; on a workload's own metadata
//! they are refused with a message saying where to move them.

use serde_json::Value;

use super::pod::InjectError;
use super::vocabulary::PREFIX;

/// Why a manifest cannot be read, or one of its objects not changed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("{origin}: not valid JSON: {message}")]
    Json { origin: String, message: String },
    #[error(
        "{origin}, document {document}: not a Kubernetes object (a map with kind and apiVersion)"
    )]
    NotAnObject { origin: String, document: usize },
    #[error("{origin}, {object}: {error}")]
    Object {
        origin: String,
        object: String,
        error: Box<InjectError>,
    },
    #[error(
        "{origin}, {object}: annotation {key} is on the {kind}'s own metadata, where kubexit does \
         not read it; move it to {path}.metadata.annotations (the pod template's)"
    )]
    Misplaced {
        origin: String,
        object: String,
        kind: String,
        key: String,
        path: &'static str,
    },
    #[error("cannot write YAML: {0}")]
    Render(String),
}

/// Where a kind keeps its pod template: `Some("")` for the object itself.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Job"
        | "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The documents of a manifest; `origin` names it in messages.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Value>, ManifestError> {
    let documents: Vec<Value> = if text.trim_start().starts_with('{') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(|e| ManifestError::Json {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?
    };
    let documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    for (i, document) in documents.iter().enumerate() {
        let object = document.get("kind").is_some_and(Value::is_string)
            && document.get("apiVersion").is_some_and(Value::is_string);
        if !object {
            return Err(ManifestError::NotAnObject {
                origin: origin.to_owned(),
                document: i + 1,
            });
        }
    }
    Ok(documents)
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Kind name`, as messages name it.
    pub object: String,
    /// Whether it has a pod template at all.
    pub has_pod: bool,
    /// The coordinated containers, when it was injected.
    pub containers: Vec<String>,
}

/// A change of one pod template: the new template and the containers it
/// coordinates.
pub type TemplateChange<'a> = dyn FnMut(&Value) -> Result<(Value, Vec<String>), InjectError> + 'a;

/// Applies `change` to the pod template of `document` (of each item of a
/// list), keeping everything else. `change` returns the new template and
/// the containers it coordinated.
pub fn transform(
    document: &Value,
    origin: &str,
    change: &mut TemplateChange,
    changes: &mut Vec<Change>,
) -> Result<Value, ManifestError> {
    let kind = document["kind"].as_str().unwrap_or_default().to_owned();
    let object = describe(document);
    if let Some(items) = document.get("items").and_then(Value::as_array)
        && kind.ends_with("List")
    {
        let mut out = document.clone();
        let mut new_items = Vec::with_capacity(items.len());
        for item in items {
            new_items.push(transform(item, origin, change, changes)?);
        }
        out["items"] = Value::Array(new_items);
        return Ok(out);
    }
    let Some(path) = template_path(&kind) else {
        changes.push(Change {
            object,
            has_pod: false,
            containers: Vec::new(),
        });
        return Ok(document.clone());
    };
    if !path.is_empty()
        && let Some(annotations) = document
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        && let Some(key) = annotations.keys().find(|k| k.starts_with(PREFIX))
    {
        return Err(ManifestError::Misplaced {
            origin: origin.to_owned(),
            object,
            kind,
            key: key.clone(),
            path: if path == "/spec/template" {
                "spec.template"
            } else {
                "spec.jobTemplate.spec.template"
            },
        });
    }
    let mut out = document.clone();
    let Some(template) = out.pointer_mut(path) else {
        changes.push(Change {
            object,
            has_pod: false,
            containers: Vec::new(),
        });
        return Ok(out);
    };
    let (new, containers) = change(template).map_err(|error| ManifestError::Object {
        origin: origin.to_owned(),
        object: object.clone(),
        error: Box::new(error),
    })?;
    *template = new;
    changes.push(Change {
        object,
        has_pod: true,
        containers,
    });
    Ok(out)
}

/// `Kind name` (or `Kind generateName...`), as messages name an object.
fn describe(document: &Value) -> String {
    let kind = document["kind"].as_str().unwrap_or("object");
    let metadata = &document["metadata"];
    match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
        (Some(name), _) => format!("{kind} {name}"),
        (None, Some(prefix)) => format!("{kind} {prefix}..."),
        (None, None) => format!("{kind} (unnamed)"),
    }
}

/// The documents as one YAML stream.
pub fn to_yaml(documents: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        // Long strings stay on one line: a folded block would be correct
        // YAML, but a command or a JSON annotation is easier to read whole.
        let options = serde_saphyr::ser_options! {
            folded_wrap_chars: usize::MAX,
        };
        let text = serde_saphyr::to_string_with_options(document, options)
            .map_err(|e| ManifestError::Render(e.to_string()))?;
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The documents as JSON objects, one after another, as `kubectl apply -f`
/// reads them.
pub fn to_json(documents: &[Value]) -> String {
    let mut out = String::new();
    for document in documents {
        out.push_str(&serde_json::to_string_pretty(document).expect("a Value always serialises"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_that_kubectl_reads_as_yaml_1_1_keeps_its_strings() {
        let documents = parse(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: 'on'\n  b: '0755'\n  c: 'yes'\n  d: \"1e3\"\n  e: |\n    two\n    lines\n",
            "test",
        )
        .unwrap();
        let text = to_yaml(&documents).unwrap();
        for quoted in ["'on'", "'0755'", "'yes'", "'1e3'"] {
            assert!(
                text.contains(quoted) || text.contains(&quoted.replace('\'', "\"")),
                "{quoted} not quoted in:\n{text}"
            );
        }
        assert_eq!(parse(&text, "again").unwrap(), documents);
    }

    #[test]
    fn json_streams_and_empty_yaml_documents() {
        let json = parse(
            "{\"apiVersion\":\"v1\",\"kind\":\"A\"}\n{\"apiVersion\":\"v1\",\"kind\":\"B\"}",
            "t",
        )
        .unwrap();
        assert_eq!(json.len(), 2);
        let yaml = parse("---\n---\napiVersion: v1\nkind: A\n---\n", "t").unwrap();
        assert_eq!(yaml.len(), 1);
    }

    #[test]
    fn field_order_is_kept() {
        let documents = parse("kind: Pod\napiVersion: v1\nmetadata: {name: x}\n", "t").unwrap();
        let text = to_yaml(&documents).unwrap();
        assert!(text.starts_with("kind: Pod\napiVersion: v1\n"), "{text}");
    }
}
