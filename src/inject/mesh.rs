//! The service meshes whose injectors kubexit recognises, and what each
//! records of what it added to a pod.
//!
//! A mesh's injector has usually run before kubexit sees the pod
//! (`istioctl kube-inject -f job.yaml | kubexit inject -f -`, or its
//! admission webhook before kubexit's), and what it added is its own:
//! kubexit never wraps, changes or counts those containers as main ones,
//! and they need no `command`. Each injector says what it added:
//!
//! - **Istio** writes the annotation `sidecar.istio.io/status`, JSON
//!   naming the `containers`, `initContainers` and `volumes` it added
//!   (`null` for none). Its proxy is `istio-proxy`: in `containers`, or in
//!   `initContainers` with `restartPolicy: Always` (a native sidecar,
//!   Istio's default from 1.27 on Kubernetes 1.33+).
//! - **Linkerd** writes `linkerd.io/proxy-version`; its containers are
//!   known by name: the proxy `linkerd-proxy` (in `containers`, or a
//!   native sidecar in `initContainers`), and the init containers
//!   `linkerd-init` and `linkerd-network-validator` (under its CNI plugin).
//!
//! [`recognise`] reads that into a [`Mesh`]: which mesh, its containers,
//! its proxy and where it runs, and the proxy's documented readiness and
//! quit endpoints, which the plan gives the main containers when the proxy
//! is a regular container. A native-sidecar proxy needs neither: the
//! kubelet starts it before the main containers and stops it after them.
//!
//! One more thing is read because a Job depends on it: Linkerd's proxy
//! serves its shutdown endpoint only when `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`
//! is `"true"` in its environment (Linkerd's default is off), and
//! [`Mesh::quit_refused`] says so, for the plan to warn.

use serde_json::{Map, Value};

/// Istio's record of what it injected.
pub const ISTIO_STATUS: &str = "sidecar.istio.io/status";
/// Linkerd's record that it injected its proxy.
pub const LINKERD_VERSION: &str = "linkerd.io/proxy-version";
/// The variable that switches on the shutdown endpoint of Linkerd's proxy.
pub const LINKERD_SHUTDOWN_VARIABLE: &str = "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED";

const ISTIO_PROXY: &str = "istio-proxy";
const LINKERD_PROXY: &str = "linkerd-proxy";
const LINKERD_INIT: &[&str] = &["linkerd-init", "linkerd-network-validator"];

/// A mesh kubexit knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Istio,
    Linkerd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Istio => "Istio",
            Kind::Linkerd => "Linkerd",
        }
    }

    /// The proxy's readiness, as its documentation gives it: pilot-agent's
    /// status port, the Linkerd proxy's admin port.
    pub fn readiness(self) -> &'static str {
        match self {
            Kind::Istio => "http://127.0.0.1:15021/healthz/ready",
            Kind::Linkerd => "http://127.0.0.1:4191/ready",
        }
    }

    /// The quit preset of `KUBEXIT_QUIT` (`POST :15020/quitquitquit`,
    /// `POST :4191/shutdown`).
    pub fn quit(self) -> &'static str {
        match self {
            Kind::Istio => "istio",
            Kind::Linkerd => "linkerd",
        }
    }
}

/// The proxy a mesh added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub name: String,
    /// In `initContainers` with `restartPolicy: Always`: the kubelet
    /// starts it first and stops it last.
    pub native: bool,
}

/// What a mesh's injector added to one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    pub kind: Kind,
    /// The containers of `spec.containers` it added.
    pub containers: Vec<String>,
    /// The init containers it added, a native proxy included.
    pub init_containers: Vec<String>,
    pub proxy: Option<Proxy>,
    /// The proxy is Linkerd's, a regular container, and its shutdown
    /// endpoint is switched off.
    shutdown_off: bool,
}

/// A mesh's record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {ISTIO_STATUS} is not the JSON Istio's injector writes ({why}); re-run \
     istioctl kube-inject, or remove the annotation if Istio did not inject this pod"
)]
pub struct MeshError {
    why: String,
}

impl Mesh {
    /// Whether `name`, of `spec.containers`, is the mesh's.
    pub fn owns(&self, name: &str) -> bool {
        self.containers.iter().any(|c| c == name)
    }

    /// The proxy when it is a regular container, which the main
    /// containers must wait for and ask to quit themselves.
    pub fn regular_proxy(&self) -> Option<&str> {
        self.proxy
            .as_ref()
            .filter(|p| !p.native)
            .map(|p| p.name.as_str())
    }

    /// Why the proxy will refuse a quit, if it will: the warning to give,
    /// naming what to change.
    pub fn quit_refused(&self) -> Option<String> {
        let proxy = self.regular_proxy().filter(|_| self.shutdown_off)?;
        Some(format!(
            "container {proxy}: Linkerd's proxy serves its shutdown endpoint only with \
             {LINKERD_SHUTDOWN_VARIABLE}=true, which it does not have, so the main containers' \
             quit (POST http://127.0.0.1:4191/shutdown) will be refused and the proxy keep the \
             pod running; annotate the pod config.alpha.linkerd.io/proxy-enable-shutdown-endpoint: \
             \"true\" before linkerd inject, or run the proxy as a native sidecar \
             (config.beta.linkerd.io/proxy-enable-native-sidecar: \"true\", Kubernetes 1.29+), \
             which the kubelet stops after the main containers"
        ))
    }
}

/// The mesh whose injector ran on `template` (a pod or pod template), if
/// any: Istio's status first, then Linkerd's version.
pub fn recognise(template: &Value) -> Result<Option<Mesh>, MeshError> {
    let annotations = template.pointer("/metadata/annotations");
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    let spec = &template["spec"];
    let names = |field: &str| -> Vec<&Map<String, Value>> {
        spec.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let has = |list: &[&Map<String, Value>], name: &str| list.iter().any(|c| name_of(c) == name);
    let (kind, added, added_init) = if let Some(status) = annotation(ISTIO_STATUS) {
        let status: Value =
            serde_json::from_str(status).map_err(|e| MeshError { why: e.to_string() })?;
        let listed = |field: &str| -> Result<Vec<String>, MeshError> {
            match status.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().map(str::to_owned).ok_or_else(|| MeshError {
                            why: format!("{field} holds {item}, not a name"),
                        })
                    })
                    .collect(),
                Some(other) => Err(MeshError {
                    why: format!("{field} is {other}, not a list"),
                }),
            }
        };
        (
            Kind::Istio,
            listed("containers")?,
            listed("initContainers")?,
        )
    } else if annotation(LINKERD_VERSION).is_some() {
        let mut init_names: Vec<String> = LINKERD_INIT.iter().map(|&n| n.to_owned()).collect();
        init_names.push(LINKERD_PROXY.to_owned());
        (Kind::Linkerd, vec![LINKERD_PROXY.to_owned()], init_names)
    } else {
        return Ok(None);
    };
    // Only what is there: a record may name what a later edit removed.
    let added: Vec<String> = added.into_iter().filter(|n| has(&containers, n)).collect();
    let added_init: Vec<String> = added_init.into_iter().filter(|n| has(&init, n)).collect();
    let proxy_name = match kind {
        Kind::Istio => ISTIO_PROXY,
        Kind::Linkerd => LINKERD_PROXY,
    };
    let proxy = if added.iter().any(|n| n == proxy_name) {
        Some(Proxy {
            name: proxy_name.to_owned(),
            native: false,
        })
    } else {
        init.iter()
            .find(|c| name_of(c) == proxy_name && added_init.iter().any(|n| n == proxy_name))
            .map(|c| Proxy {
                name: proxy_name.to_owned(),
                native: c.get("restartPolicy").and_then(Value::as_str) == Some("Always"),
            })
    };
    let shutdown_off = kind == Kind::Linkerd
        && containers
            .iter()
            .find(|c| name_of(c) == LINKERD_PROXY)
            .is_some_and(|proxy| !shutdown_enabled(proxy));
    Ok(Some(Mesh {
        kind,
        containers: added,
        init_containers: added_init,
        proxy,
        shutdown_off,
    }))
}

/// Whether Linkerd's proxy has its shutdown endpoint switched on.
fn shutdown_enabled(proxy: &Map<String, Value>) -> bool {
    proxy
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e["name"] == LINKERD_SHUTDOWN_VARIABLE)
        .and_then(|e| e["value"].as_str())
        .is_some_and(|v| v.trim() == "true")
}

fn name_of(object: &Map<String, Value>) -> &str {
    object
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: Value, containers: Value, init: Value) -> Value {
        json!({
            "metadata": {"annotations": annotations},
            "spec": {"containers": containers, "initContainers": init},
        })
    }

    #[test]
    fn istio_is_known_by_its_status_and_its_proxy_by_where_it_runs() {
        let status = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"]}"#;
        let regular = pod(
            json!({ISTIO_STATUS: status}),
            json!([{"name": "pi"}, {"name": "istio-proxy"}]),
            json!([{"name": "istio-init"}]),
        );
        let mesh = recognise(&regular).unwrap().unwrap();
        assert_eq!(mesh.kind, Kind::Istio);
        assert_eq!(mesh.containers, ["istio-proxy"]);
        assert_eq!(mesh.init_containers, ["istio-init"]);
        assert_eq!(mesh.regular_proxy(), Some("istio-proxy"));
        assert!(mesh.owns("istio-proxy") && !mesh.owns("pi"));

        let status = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null}"#;
        let native = pod(
            json!({ISTIO_STATUS: status}),
            json!([{"name": "pi"}]),
            json!([{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}]),
        );
        let mesh = recognise(&native).unwrap().unwrap();
        assert!(mesh.containers.is_empty());
        assert_eq!(mesh.proxy.as_ref().map(|p| p.native), Some(true));
        assert_eq!(mesh.regular_proxy(), None);
    }

    #[test]
    fn a_container_named_like_a_proxy_without_the_meshs_record_is_no_mesh() {
        let plain = pod(
            json!({}),
            json!([{"name": "app"}, {"name": "istio-proxy"}, {"name": "linkerd-proxy"}]),
            json!([]),
        );
        assert_eq!(recognise(&plain).unwrap(), None);
    }

    #[test]
    fn an_unreadable_istio_status_is_refused_naming_it() {
        let bad = pod(
            json!({ISTIO_STATUS: "{"}),
            json!([{"name": "a"}]),
            json!([]),
        );
        let err = recognise(&bad).unwrap_err().to_string();
        assert!(err.contains(ISTIO_STATUS), "{err}");
        let bad = pod(
            json!({ISTIO_STATUS: r#"{"containers":"istio-proxy"}"#}),
            json!([{"name": "a"}]),
            json!([]),
        );
        assert!(recognise(&bad).is_err());
    }

    #[test]
    fn linkerds_proxy_refuses_the_quit_unless_its_shutdown_endpoint_is_on() {
        let with = |env: Value| {
            pod(
                json!({LINKERD_VERSION: "stable-2.14"}),
                json!([{"name": "linkerd-proxy", "env": env}, {"name": "app"}]),
                json!([{"name": "linkerd-init"}]),
            )
        };
        let off = recognise(&with(json!([]))).unwrap().unwrap();
        assert_eq!(off.kind, Kind::Linkerd);
        assert_eq!(off.init_containers, ["linkerd-init"]);
        let warning = off.quit_refused().unwrap();
        assert!(warning.contains(LINKERD_SHUTDOWN_VARIABLE), "{warning}");
        assert!(
            warning.contains("config.alpha.linkerd.io/proxy-enable-shutdown-endpoint"),
            "{warning}"
        );
        assert!(warning.contains("native sidecar"), "{warning}");
        let said_false = json!([{"name": LINKERD_SHUTDOWN_VARIABLE, "value": "false"}]);
        assert!(
            recognise(&with(said_false))
                .unwrap()
                .unwrap()
                .quit_refused()
                .is_some()
        );
        let on = json!([{"name": LINKERD_SHUTDOWN_VARIABLE, "value": "true"}]);
        assert_eq!(recognise(&with(on)).unwrap().unwrap().quit_refused(), None);
    }
}
