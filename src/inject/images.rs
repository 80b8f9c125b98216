//! Containers without `command`, and what their images run.
//!
//! A container that gives no `command` runs its image's ENTRYPOINT, with
//! its own `args` or else the image's CMD. To wrap it, kubexit must write
//! that out, and only the image's registry knows it. The transformation
//! does no I/O, so the lookup happens before it, in three steps that its
//! callers (the command line, the webhook) run:
//!
//! 1. [`wanted`](super::pod::wanted) names the containers whose command
//!    must come from their image (coordinated, no `command`, no
//!    `kubexit.io/entrypoint.NAME`; `plan` decides which), with the
//!    platforms the pod can run on ([`platforms`]);
//! 2. the caller reads those images' configs (the registry client), all at
//!    once, within one budget;
//! 3. the answers, by container, are [`Options::images`](super::Options),
//!    and [`ImageRun::wrapped`] makes of one the container's new command
//!    and args, exactly what the kubelet would have run.
//!
//! A container missing from the answers (`--offline`, or a lookup switched
//! off) is refused as before the lookup existed, naming
//! `kubexit.io/entrypoint.NAME`.

use std::collections::BTreeMap;

use serde_json::Value;

/// The architectures a pod runs on when nothing in it says which.
pub const DEFAULT_ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// The node label that names a node's architecture.
const ARCH_LABEL: &str = "kubernetes.io/arch";

/// One container whose command must come from its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub container: String,
    pub image: String,
    /// `linux/ARCH`, one per architecture the pod can run on.
    pub platforms: Vec<String>,
}

/// What an image runs, as its registry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRun {
    /// The image pinned by the digest it was read at (`IMAGE@sha256:...`),
    /// for the record of the injection.
    pub pinned: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The caller's answers, by container name: what the image runs, or why
/// it could not be read (a message naming the image, the registry's
/// answer and the way out).
pub type Images = BTreeMap<String, Result<ImageRun, String>>;

impl ImageRun {
    /// The `command` and, when the container has none, the `args` that run
    /// what the kubelet would run for a container without `command`, with
    /// `kubexit` first: ENTRYPOINT, then the container's args or else CMD.
    /// An image with CMD only runs its CMD (or the container's args, which
    /// replace it). `None` when the image runs nothing at all.
    pub fn wrapped(&self, kubexit: &str, has_args: bool) -> Option<(Vec<String>, Vec<String>)> {
        let mut command = vec![kubexit.to_owned()];
        if self.entrypoint.is_empty() {
            if has_args {
                return Some((command, Vec::new()));
            }
            if self.cmd.is_empty() {
                return None;
            }
            command.extend(self.cmd.iter().cloned());
            return Some((command, Vec::new()));
        }
        command.extend(self.entrypoint.iter().cloned());
        let args = if has_args {
            Vec::new()
        } else {
            self.cmd.clone()
        };
        Some((command, args))
    }
}

/// The platforms (`linux/ARCH`) the pod in `template` can run on: the
/// architecture its `nodeSelector` names, or those its required node
/// affinity allows, or else [`DEFAULT_ARCHITECTURES`].
pub fn platforms(template: &Value) -> Vec<String> {
    let spec = &template["spec"];
    let selected = spec
        .pointer("/nodeSelector")
        .and_then(|s| s.get(ARCH_LABEL))
        .and_then(Value::as_str)
        .map(|arch| vec![arch.trim().to_owned()]);
    let allowed = affinity_architectures(spec);
    let architectures = match (selected, allowed) {
        (Some(selected), Some(allowed)) => {
            let both: Vec<String> = selected
                .iter()
                .filter(|a| allowed.contains(a))
                .cloned()
                .collect();
            // Nodes that match both do not exist; the selector is what the
            // pod's author wrote most plainly.
            if both.is_empty() { selected } else { both }
        }
        (Some(selected), None) => selected,
        (None, Some(allowed)) if !allowed.is_empty() => allowed,
        _ => DEFAULT_ARCHITECTURES.map(str::to_owned).to_vec(),
    };
    architectures
        .into_iter()
        .map(|arch| format!("linux/{arch}"))
        .collect()
}

/// The architectures the required node affinity allows; `None` when it
/// does not constrain them (no affinity, or a term without a constraint on
/// the architecture, which admits any).
fn affinity_architectures(spec: &Value) -> Option<Vec<String>> {
    let terms = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    if terms.is_empty() {
        return None;
    }
    // Terms are alternatives: the architectures of any of them.
    let mut union: Vec<String> = Vec::new();
    for term in terms {
        let mut allowed: Option<Vec<String>> = None;
        for expression in term["matchExpressions"].as_array().into_iter().flatten() {
            if expression["key"].as_str() != Some(ARCH_LABEL) {
                continue;
            }
            let values: Vec<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|v| v.trim().to_owned())
                .collect();
            let these: Vec<String> = match expression["operator"].as_str() {
                Some("In") => values,
                Some("NotIn") => DEFAULT_ARCHITECTURES
                    .iter()
                    .map(|a| (*a).to_owned())
                    .filter(|a| !values.contains(a))
                    .collect(),
                _ => continue,
            };
            // Expressions of one term must all hold.
            allowed = Some(match allowed {
                None => these,
                Some(before) => before.into_iter().filter(|a| these.contains(a)).collect(),
            });
        }
        match allowed {
            None => return None,
            Some(allowed) => {
                for arch in allowed {
                    if !union.contains(&arch) {
                        union.push(arch);
                    }
                }
            }
        }
    }
    Some(union)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(entrypoint: &[&str], cmd: &[&str]) -> ImageRun {
        ImageRun {
            pinned: "example.com/app@sha256:00".into(),
            entrypoint: entrypoint.iter().map(|w| (*w).to_owned()).collect(),
            cmd: cmd.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_become_command_and_args_unless_the_container_has_args() {
        let image = run(&["/entry.sh"], &["serve", "--port=80"]);
        assert_eq!(
            image.wrapped("kubexit", false),
            Some((
                words(&["kubexit", "/entry.sh"]),
                words(&["serve", "--port=80"])
            ))
        );
        assert_eq!(
            image.wrapped("kubexit", true),
            Some((words(&["kubexit", "/entry.sh"]), Vec::new()))
        );
    }

    #[test]
    fn cmd_only_is_the_command_and_the_containers_args_replace_it() {
        let image = run(&[], &["sh", "-c", "true"]);
        assert_eq!(
            image.wrapped("kubexit", false),
            Some((words(&["kubexit", "sh", "-c", "true"]), Vec::new()))
        );
        assert_eq!(
            image.wrapped("kubexit", true),
            Some((words(&["kubexit"]), Vec::new()))
        );
        assert_eq!(run(&[], &[]).wrapped("kubexit", false), None);
    }

    #[test]
    fn platforms_come_from_the_node_selector_or_the_required_affinity() {
        assert_eq!(
            platforms(&json!({"spec": {}})),
            words(&["linux/amd64", "linux/arm64"])
        );
        assert_eq!(
            platforms(&json!({"spec": {"nodeSelector": {"kubernetes.io/arch": "arm64"}}})),
            words(&["linux/arm64"])
        );
        let affinity = |terms: Value| {
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }}}})
        };
        let arch = |op: &str, values: &[&str]| json!({"key": "kubernetes.io/arch", "operator": op, "values": values});
        assert_eq!(
            platforms(&affinity(
                json!([{"matchExpressions": [arch("In", &["amd64"])]}])
            )),
            words(&["linux/amd64"])
        );
        assert_eq!(
            platforms(&affinity(
                json!([{"matchExpressions": [arch("NotIn", &["amd64"])]}])
            )),
            words(&["linux/arm64"])
        );
        // A term that does not constrain the architecture admits any.
        assert_eq!(
            platforms(&affinity(json!([
                {"matchExpressions": [arch("In", &["amd64"])]},
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
            ]))),
            words(&["linux/amd64", "linux/arm64"])
        );
        assert_eq!(
            platforms(&affinity(json!([
                {"matchExpressions": [arch("In", &["s390x"])]},
                {"matchExpressions": [arch("In", &["amd64"])]}
            ]))),
            words(&["linux/s390x", "linux/amd64"])
        );
    }
}
