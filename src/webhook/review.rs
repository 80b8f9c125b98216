//! One admission review: the bytes the API server posted in, the bytes of
//! the answer out, and what was decided, for the log. No I/O.
//!
//! The decisions, in order:
//!
//! 1. Not an `AdmissionReview` at all: an error ([`NotAReview`]), which the
//!    server answers with 400; the API server then applies the webhook's
//!    failure policy. A review whose object kubexit cannot read but whose
//!    `uid` it can is allowed unchanged instead.
//! 2. Anything but the creation of a core `v1` Pod (the webhook is
//!    registered for that alone, but a configuration may say otherwise):
//!    allowed unchanged.
//! 3. A pod with no `kubexit.io/` annotation has not asked for kubexit:
//!    allowed unchanged. A labelled namespace offers injection; the pod's
//!    annotations take it up, as they do for `kubexit inject`.
//! 4. A pod with `kubexit.io/inject: disabled` passes through unchanged.
//!    One that carries `kubexit.io/injected` (made with `kubexit inject`,
//!    or this webhook's answer seen again on a reinvocation) is injected
//!    again, as `kubexit inject` injects twice, with the install image it
//!    has, and the install container and volumes kubexit added kept as the
//!    API server holds them (with its defaults filled in) where nothing
//!    else of theirs differs. Unchanged, it passes through; changed by a
//!    webhook after kubexit's (a mesh's injector adding its proxy, with
//!    `reinvocationPolicy: IfNeeded` on kubexit's registration), it gets
//!    the patch that coordinates its main containers with what was added,
//!    and only that: another injector's containers are never in it. So a
//!    mesh's webhook before or after kubexit's gives the same pod. One that
//!    cannot be injected again (its record no longer fits it) is allowed
//!    unchanged, as a fault, rather than denied.
//! 5. Otherwise the pod goes through [`inject`](crate::inject::inject), the
//!    transformation `kubexit inject` runs, with the same [`Options`]: the
//!    answer is allowed with a JSON Patch from the pod as sent to the pod as
//!    injected (see `patch`), and the injection's warnings (a mesh proxy that
//!    will refuse the quit) as the response's `warnings`, which `kubectl`
//!    shows. An [`InjectError`](crate::inject::InjectError)
//!    denies the pod with the error's own message, word for word what
//!    `kubexit inject` says after naming the file and the object; the API
//!    server prefixes it with the webhook's name for `kubectl`.
//!
//! Anything else that goes wrong (the pod cannot be serialized, the patch
//! cannot be written, the transformation panics) allows the pod unchanged:
//! a fault of the webhook's own must not decide whether a pod runs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use k8s_openapi::ByteString;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::patch;
use super::pull_secrets::PodSecrets;
use crate::inject::images::Wanted;
use crate::inject::vocabulary::PREFIX;
use crate::inject::{self, Options};

/// The body is not an AdmissionReview that can be answered.
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview: {0}")]
pub struct NotAReview(pub String);

/// What the webhook did with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Injected into these containers; the answer carries the patch.
    Injected(Vec<String>),
    /// Denied with this message.
    Denied(String),
    /// Allowed unchanged, for one of the reasons below ([`NOT_ASKED`]...).
    Unchanged(&'static str),
    /// Allowed unchanged because something went wrong inside the webhook.
    Fault(String),
}

/// An answered review.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview to send back, serialized.
    pub answer: Vec<u8>,
    /// `Pod NAMESPACE/NAME` (`NAME-*` while the name is still to be
    /// generated), or what else was reviewed.
    pub object: String,
    pub uid: String,
    pub outcome: Outcome,
}

pub const NOT_A_POD: &str = "not the creation of a Pod";
pub const NOT_ASKED: &str = "no kubexit.io/ annotation";
pub const ALREADY_INJECTED: &str = "already injected (kubexit.io/injected)";
pub const DISABLED: &str = "kubexit.io/inject: disabled";
pub const NOTHING_TO_INJECT: &str = "every container skipped";

/// Answers the AdmissionReview in `body`, injecting as `options` say.
pub fn review(body: &[u8], options: &Options) -> Result<Reviewed, NotAReview> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(err) => return unreadable_object(body, &err.to_string()),
    };
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| NotAReview("it has no request".into()))?;
    let response = AdmissionResponse::from(&request);
    let object = describe(&request);
    let uid = request.uid.clone();
    let (response, outcome) = decide(&request, response, options);
    let answer = serialize(response)?;
    Ok(Reviewed {
        answer,
        object,
        uid,
        outcome,
    })
}

/// The containers of the pod in `body` whose command must come from their
/// image, when that pod is one [`review`] would inject, and where its pull
/// secrets are named: what to read before reviewing it.
pub fn wanted(body: &[u8], options: &Options) -> (Vec<Wanted>, Option<PodSecrets>) {
    let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) else {
        return (Vec::new(), None);
    };
    let Ok(request): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else {
        return (Vec::new(), None);
    };
    match pod_to_inject(&request) {
        Ok(pod) => {
            let namespace = request.namespace.as_deref().unwrap_or("default");
            (
                inject::wanted(&pod, options),
                Some(PodSecrets::of(namespace, &pod)),
            )
        }
        Err(_) => (Vec::new(), None),
    }
}

/// The pod of a review that asks for an injection, or why there is none
/// (with the outcome it has then).
fn pod_to_inject(request: &AdmissionRequest<DynamicObject>) -> Result<Value, Outcome> {
    let is_pod = request.kind.group.is_empty()
        && request.kind.version == "v1"
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none();
    if !is_pod || !matches!(request.operation, Operation::Create) {
        return Err(Outcome::Unchanged(NOT_A_POD));
    }
    let Some(object) = &request.object else {
        return Err(Outcome::Fault("the review has no object".into()));
    };
    let pod = serde_json::to_value(object)
        .map_err(|err| Outcome::Fault(format!("cannot read the pod: {err}")))?;
    if !asks_for_kubexit(&pod) {
        return Err(Outcome::Unchanged(NOT_ASKED));
    }
    if inject::is_injected(&pod) && inject::is_disabled(&pod) {
        return Err(Outcome::Unchanged(ALREADY_INJECTED));
    }
    if inject::is_disabled(&pod) {
        return Err(Outcome::Unchanged(DISABLED));
    }
    Ok(pod)
}

fn decide(
    request: &AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
    options: &Options,
) -> (AdmissionResponse, Outcome) {
    let pod = match pod_to_inject(request) {
        Ok(pod) => pod,
        Err(outcome) => return (response, outcome),
    };
    let injected_before = inject::is_injected(&pod);
    // An injected pod is injected again, as `kubexit inject` does twice:
    // the same pod, unless another webhook has added to it since (a
    // mesh's proxy, on a reinvocation). Its install image stays the one
    // it has, whoever chose it.
    let again;
    let options = match inject::pod::install_image(&pod) {
        Some(image) if injected_before => {
            again = Options {
                image,
                ..options.clone()
            };
            &again
        }
        _ => options,
    };
    // The transformation is believed not to panic; if it ever does, the pod
    // is let through as it came rather than the connection dropped.
    let injected = match catch_unwind(AssertUnwindSafe(|| inject::inject(&pod, options))) {
        Ok(injected) => injected,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return (
                response,
                Outcome::Fault(format!("the injection panicked: {why}")),
            );
        }
    };
    // What kubexit added before, the API server has since completed with
    // its defaults; added again, it is taken as the server holds it, so
    // that the patch does not take the defaults out only for the server to
    // put them back.
    let injected = injected.map(|mut injection| {
        if injected_before {
            injection.template = served_kept(&pod, injection.template);
        }
        injection
    });
    match injected {
        Ok(injection) if injection.containers.is_empty() => {
            (response, Outcome::Unchanged(NOTHING_TO_INJECT))
        }
        Ok(injection) if injected_before && injection.template == pod => {
            (response, Outcome::Unchanged(ALREADY_INJECTED))
        }
        Ok(injection) => {
            let patch = patch::between(&pod, &injection.template);
            let mut response = response;
            if !injection.warnings.is_empty() {
                response.warnings = Some(injection.warnings);
            }
            match response.clone().with_patch(patch) {
                Ok(patched) => (patched, Outcome::Injected(injection.containers)),
                Err(err) => (response, Outcome::Fault(err.to_string())),
            }
        }
        // Admitted before, or made with `kubexit inject`: what stands is
        // let through rather than refused now.
        Err(err) if injected_before => (
            response,
            Outcome::Fault(format!(
                "{ALREADY_INJECTED}, and cannot be injected again: {err}"
            )),
        ),
        Err(err) => {
            let message = err.to_string();
            (response.deny(&message), Outcome::Denied(message))
        }
    }
}

/// `template`, re-injected from `pod`, with the init containers and
/// volumes its record names taken from `pod` wherever `pod`'s hold all of
/// the template's fields with the same values (and the fields the API
/// server defaulted besides).
fn served_kept(pod: &Value, mut template: Value) -> Value {
    let Some(record) = template["metadata"]["annotations"][inject::record::key()]
        .as_str()
        .and_then(|text| inject::record::Record::from_json(text).ok())
    else {
        return template;
    };
    for (list, names) in [
        ("initContainers", &record.init_containers),
        ("volumes", &record.volumes),
    ] {
        let Some(added) = template["spec"][list].as_array_mut() else {
            continue;
        };
        let served = pod["spec"][list]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for item in added.iter_mut().filter(|item| {
            item["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|m| m == n))
        }) {
            if let Some(held) = served
                .iter()
                .find(|s| s["name"] == item["name"] && holds(s, item))
            {
                *item = held.clone();
            }
        }
    }
    template
}

/// Whether `wider` has every field of `narrower`, with the same values
/// (in maps at any depth; lists element by element).
fn holds(wider: &Value, narrower: &Value) -> bool {
    match (wider, narrower) {
        (Value::Object(wide), Value::Object(narrow)) => narrow
            .iter()
            .all(|(key, value)| wide.get(key).is_some_and(|w| holds(w, value))),
        (Value::Array(wide), Value::Array(narrow)) => {
            wide.len() == narrow.len() && wide.iter().zip(narrow).all(|(w, n)| holds(w, n))
        }
        _ => wider == narrower,
    }
}

/// Whether the pod has any `kubexit.io/` annotation.
pub fn asks_for_kubexit(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|annotations| annotations.keys().any(|k| k.starts_with(PREFIX)))
}

fn describe(request: &AdmissionRequest<DynamicObject>) -> String {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let metadata = request.object.as_ref().map(|o| &o.metadata);
    let name = match metadata {
        Some(meta) if meta.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            meta.name.clone().unwrap_or_default()
        }
        Some(meta) if meta.generate_name.is_some() => {
            format!("{}*", meta.generate_name.as_deref().unwrap_or_default())
        }
        _ => request.name.clone(),
    };
    format!("{} {namespace}/{name}", request.kind.kind)
}

/// A review whose object kubexit's types cannot read: allowed unchanged
/// when its `uid` can still be found, so that the answer reaches the API
/// server; an error otherwise.
fn unreadable_object(body: &[u8], why: &str) -> Result<Reviewed, NotAReview> {
    let value: Value = serde_json::from_slice(body).map_err(|e| NotAReview(e.to_string()))?;
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .ok_or_else(|| NotAReview(why.to_owned()))?
        .to_owned();
    let mut response = AdmissionResponse::invalid("");
    response.allowed = true;
    response.uid = uid.clone();
    response.result = Default::default();
    if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
        response.types.api_version = api_version.to_owned();
    }
    let answer = serialize(response)?;
    let kind = value
        .pointer("/request/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    Ok(Reviewed {
        answer,
        object: kind.to_owned(),
        uid,
        outcome: Outcome::Fault(format!("cannot read the review: {why}")),
    })
}

/// The AdmissionReview that carries `response`, as JSON. kube-core writes
/// the patch's bytes as a list of numbers (kube-rs issue 1781); Kubernetes
/// documents them, as Go writes every `[]byte`, as base64, and that is what
/// is sent (a third of the size, too).
fn serialize(mut response: AdmissionResponse) -> Result<Vec<u8>, NotAReview> {
    let fail = |e: serde_json::Error| NotAReview(format!("cannot write the answer: {e}"));
    let patch = response.patch.take();
    let mut review = serde_json::to_value(response.into_review()).map_err(fail)?;
    if let Some(patch) = patch
        && let Some(response) = review.get_mut("response").and_then(Value::as_object_mut)
    {
        let encoded = serde_json::to_value(ByteString(patch)).map_err(fail)?;
        response.insert("patch".to_owned(), encoded);
    }
    serde_json::to_vec(&review).map_err(fail)
}
