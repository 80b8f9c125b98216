//! Birth dependencies judged by the Kubernetes API, as upstream does it.
//!
//! With `KUBEXIT_POD_NAME` set, a birth dependency is a container of this
//! pod, and it is ready when the kubelet says so: `ready: true` in the pod's
//! `status.containerStatuses`, or in `status.initContainerStatuses`, where
//! native sidecars (init containers with `restartPolicy: Always`) report.
//! Upstream manifests keep working unchanged; upstream's blind spots do not
//! carry over.
//!
//! The promises:
//!
//! - **In-cluster, the ecosystem's way.** The API server is
//!   `KUBERNETES_SERVICE_HOST`:`KUBERNETES_SERVICE_PORT` (IPv6 too); the
//!   service account's token, CA and namespace come from its mount. The
//!   client re-reads the token file (and the CA) about once a minute, so a
//!   rotated token is picked up. Outside a cluster kubexit says so at once
//!   and exits 1, instead of waiting out the timeout.
//! - **No busy polling.** The pod is listed once by field selector
//!   (`metadata.name=POD`), then watched from the list's resource version.
//!   A watch the server ends is resumed where it stopped; `410 Gone` (the
//!   version is too old) means list again. Only failures wait, with a
//!   backoff capped at a few seconds, until the birth timeout ends the wait;
//!   so do a watch that ends within a second without news and a `410 Gone`
//!   within a second of its watch, so that a server that closes every watch
//!   cannot make kubexit spin.
//! - **Errors said at once.** 403 Forbidden is explained once with the Role
//!   to add; a missing pod, a token the server refuses and an unreachable
//!   server are each said clearly when they first happen, then retried.
//!   The latest one is part of the timeout's message.
//!
//! The API conversation runs in a task of its own and publishes the latest
//! view of the pod on a watch channel; the supervisor's event loop reads it
//! beside signals and the graveyard, so a stop signal or a death dependency
//! ends the wait just as in graveyard mode.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fs;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::PodTarget;
use crate::dependencies::verdict::Verdict;
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;

/// How long the server may keep one watch open (it may end it sooner).
const WATCH_SECONDS: u32 = 290;

/// The backoff between failed attempts: doubling from the first step up to
/// the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// A watch that ends sooner than this without news is not resumed at once,
/// so that a server closing every watch cannot make kubexit spin.
const QUICK_END: Duration = Duration::from_secs(1);

/// The API server and credentials of the pod kubexit runs in.
#[derive(Debug)]
struct Cluster {
    url: String,
    namespace: String,
    token: PathBuf,
    ca: PathBuf,
}

impl Cluster {
    /// Finds the cluster from the pod's environment and service account, or
    /// says why this is not a pod that can reach one.
    fn locate(target: &PodTarget) -> Result<Cluster, String> {
        let dir = &target.service_account_dir;
        let not_in_cluster = |why: String| {
            format!(
                "KUBEXIT_POD_NAME is set, but kubexit is not running in a Kubernetes cluster: \
                 {why}. In a pod, the kubelet sets KUBERNETES_SERVICE_HOST and \
                 KUBERNETES_SERVICE_PORT and mounts the service account at {}; outside \
                 Kubernetes, unset KUBEXIT_POD_NAME, and birth dependencies are judged by the \
                 readiness their kubexit declares in the graveyard",
                dir.display()
            )
        };
        let (Some(host), Some(port)) = (&target.service_host, &target.service_port) else {
            return Err(not_in_cluster(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not both set".into(),
            ));
        };
        let token = dir.join("token");
        if !token.is_file() {
            return Err(not_in_cluster(format!(
                "there is no service account token at {} (is automountServiceAccountToken \
                 false for this pod?)",
                token.display()
            )));
        }
        let host = host.trim();
        let port = port.trim();
        if port.parse::<u16>().is_err() {
            return Err(format!(
                "KUBERNETES_SERVICE_PORT is {port:?}, not a port number"
            ));
        }
        // An IPv6 address goes in brackets in a URL.
        let url = if host.contains(':') && !host.starts_with('[') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let namespace = match &target.namespace {
            Some(namespace) => namespace.clone(),
            None => {
                let file = dir.join("namespace");
                let read = fs::read_to_string(&file).map_err(|err| {
                    format!(
                        "cannot tell this pod's namespace: KUBEXIT_NAMESPACE is not set and \
                         {} cannot be read ({err}); set KUBEXIT_NAMESPACE from the downward \
                         API (fieldRef metadata.namespace)",
                        file.display()
                    )
                })?;
                read.trim().to_owned()
            }
        };
        Ok(Cluster {
            url,
            namespace,
            token,
            ca: dir.join("ca.crt"),
        })
    }

    /// A client for this cluster: the service account's CA, and its token
    /// file, which the client reloads as it rotates.
    fn client(&self) -> Result<kube::Client, String> {
        let pem = fs::read(&self.ca).map_err(|err| {
            format!(
                "cannot read the cluster's CA certificate {}: {err}",
                self.ca.display()
            )
        })?;
        let roots = CertificateDer::pem_slice_iter(&pem)
            .map(|cert| cert.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("{} is not a PEM certificate: {err}", self.ca.display()))?;
        if roots.is_empty() {
            return Err(format!("{} holds no PEM certificate", self.ca.display()));
        }
        let url = self
            .url
            .parse()
            .map_err(|err| format!("{} is not a usable API server address: {err}", self.url))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = self.namespace.clone();
        config.root_cert = Some(roots);
        config.root_cert_file = Some(self.ca.clone());
        config.auth_info.token_file = Some(self.token.display().to_string());
        config.connect_timeout = Some(Duration::from_secs(5));
        // kubexit backs off on its own and says why.
        config.default_retry = false;
        kube::Client::try_from(config)
            .map_err(|err| format!("cannot set up the Kubernetes client: {}", chain(&err)))
    }
}

/// The latest the API has said about the pod.
#[derive(Debug, Clone, Default)]
struct News {
    /// The pod as last listed or watched, once it has been seen.
    pod: Option<PodView>,
    /// The problem the last attempt ran into, until a success clears it.
    trouble: Option<String>,
}

/// What the waiting side needs from a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodView {
    /// The containers, init containers and native sidecars the pod spec
    /// declares, for reports of a name that is not among them.
    declared: Vec<String>,
    statuses: BTreeMap<String, ContainerView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerView {
    ready: bool,
    /// Ended, and the pod will not start it again.
    finished: bool,
    state: String,
}

impl PodView {
    fn of(pod: &Pod) -> PodView {
        let spec = pod.spec.as_ref();
        // A pod without a policy has the API server's default, Always.
        let restarts = spec
            .and_then(|s| s.restart_policy.as_deref())
            .and_then(|policy| RestartPolicy::parse(policy).ok())
            .unwrap_or(RestartPolicy::Always);
        let never = |code: i32| !restarts.restarts(Some(code));
        let mut declared = Vec::new();
        let mut sidecars = Vec::new();
        if let Some(spec) = spec {
            for container in spec.init_containers.iter().flatten() {
                declared.push(container.name.clone());
                if container.restart_policy.as_deref() == Some("Always") {
                    sidecars.push(container.name.clone());
                }
            }
            declared.extend(spec.containers.iter().map(|c| c.name.clone()));
        }
        let mut statuses = BTreeMap::new();
        if let Some(status) = &pod.status {
            let all = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for container in all {
                let restarts = sidecars.contains(&container.name);
                statuses.insert(
                    container.name.clone(),
                    ContainerView::of(container, |code| !restarts && never(code)),
                );
            }
        }
        PodView { declared, statuses }
    }
}

impl ContainerView {
    fn of(status: &ContainerStatus, finished_for_good: impl Fn(i32) -> bool) -> ContainerView {
        let state = status.state.as_ref();
        let (finished, state) = if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            let reason = t.reason.as_deref().unwrap_or("terminated");
            (
                finished_for_good(t.exit_code),
                format!("{reason}, exit code {}", t.exit_code),
            )
        } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            (
                false,
                format!(
                    "waiting: {}",
                    w.reason.as_deref().unwrap_or("no reason given")
                ),
            )
        } else if state.and_then(|s| s.running.as_ref()).is_some() {
            (false, "running, not ready".into())
        } else {
            (false, "no state yet".into())
        };
        ContainerView {
            ready: status.ready,
            finished,
            state,
        }
    }
}

/// The waiting side: the latest news of the pod and the verdict on it.
pub struct PodWait {
    deps: Vec<Name>,
    pod: String,
    namespace: String,
    news: watch::Receiver<News>,
    /// Closed once the API task has ended, which it does not do on its own.
    open: bool,
    task: JoinHandle<()>,
}

impl Drop for PodWait {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWait {
    /// Locates the cluster and starts following the pod. An error means
    /// the wait cannot even begin (not in a cluster, no namespace, an
    /// unusable CA): the caller ends kubexit with status 1.
    pub fn start(target: &PodTarget, deps: &[Name]) -> Result<PodWait, String> {
        let cluster = Cluster::locate(target)?;
        let client = cluster.client()?;
        tracing::info!(
            "Watching pod {}/{} at {}",
            cluster.namespace,
            target.name,
            cluster.url
        );
        let (sender, news) = watch::channel(News::default());
        let follower = Follower {
            api: Api::namespaced(client, &cluster.namespace),
            pod: target.name.clone(),
            namespace: cluster.namespace.clone(),
            url: cluster.url.clone(),
            news: sender,
            backoff: BACKOFF_FIRST,
            said: None,
        };
        Ok(PodWait {
            deps: deps.to_vec(),
            pod: target.name.clone(),
            namespace: cluster.namespace,
            news,
            open: true,
            task: tokio::spawn(follower.run()),
        })
    }

    /// Returns when there is news of the pod; pends forever once the API
    /// task has ended.
    pub async fn changed(&mut self) {
        if self.open && self.news.changed().await.is_ok() {
            return;
        }
        self.open = false;
        std::future::pending().await
    }

    pub fn verdict(&self) -> Verdict {
        let news = self.news.borrow();
        let Some(pod) = &news.pod else {
            return Verdict::Waiting;
        };
        let mut all_ready = true;
        for dep in &self.deps {
            match pod.statuses.get(dep.as_str()) {
                Some(c) if c.ready => {}
                Some(c) if c.finished => return Verdict::Died(dep.clone()),
                _ => all_ready = false,
            }
        }
        if all_ready {
            Verdict::AllReady
        } else {
            Verdict::Waiting
        }
    }

    /// The dependencies not ready yet and why, then the API's latest
    /// trouble, such as `server (running, not ready)`.
    pub fn report(&self) -> String {
        let news = self.news.borrow();
        let mut parts = Vec::new();
        for dep in &self.deps {
            let state = match &news.pod {
                None => "pod not seen yet".to_owned(),
                Some(pod) => match pod.statuses.get(dep.as_str()) {
                    Some(c) if c.ready => continue,
                    Some(c) => c.state.clone(),
                    None if pod.declared.iter().any(|d| d == dep.as_str()) => {
                        "no status yet".to_owned()
                    }
                    None => format!(
                        "not a container of pod {}/{}; its containers: {}",
                        self.namespace,
                        self.pod,
                        if pod.declared.is_empty() {
                            "none listed".to_owned()
                        } else {
                            pod.declared.join(", ")
                        }
                    ),
                },
            };
            parts.push(format!("{dep} ({state})"));
        }
        let mut report = parts.join(", ");
        if let Some(trouble) = &news.trouble {
            report.push_str("; last Kubernetes API error: ");
            report.push_str(trouble);
        }
        report
    }
}

/// A problem with the API, worth saying once when it first happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Forbidden,
    Unauthorized,
    NotFound,
    Unreachable,
    Other,
}

/// The task that lists and watches the pod.
struct Follower {
    api: Api<Pod>,
    pod: String,
    namespace: String,
    url: String,
    news: watch::Sender<News>,
    backoff: Duration,
    /// The kind of trouble last logged, so that a retry loop logs it once.
    said: Option<Kind>,
}

/// Why one list-and-watch round ended.
enum RoundEnd {
    /// List again: the version expired, or the pod is gone.
    Relist,
    /// Wait, then list again.
    Failed,
}

impl Follower {
    async fn run(mut self) {
        let fields = format!("metadata.name={}", self.pod);
        loop {
            match self.round(&fields).await {
                RoundEnd::Relist => {}
                RoundEnd::Failed => self.pause().await,
            }
        }
    }

    /// One list, then watches from its version for as long as they last.
    async fn round(&mut self, fields: &str) -> RoundEnd {
        let list = match self.api.list(&ListParams::default().fields(fields)).await {
            Ok(list) => list,
            Err(err) => {
                self.trouble(&err);
                return RoundEnd::Failed;
            }
        };
        let Some(pod) = list
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&self.pod))
        else {
            self.not_found("is not in the list of pods");
            return RoundEnd::Failed;
        };
        self.seen(pod);
        let mut version = list.metadata.resource_version.unwrap_or_default();
        loop {
            let started = Instant::now();
            let params = WatchParams::default().fields(fields).timeout(WATCH_SECONDS);
            let stream = match self.api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(err) if code(&err) == Some(410) => return self.expired(started).await,
                Err(err) => {
                    self.trouble(&err);
                    return RoundEnd::Failed;
                }
            };
            let mut stream = pin!(stream);
            let mut news = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        news = true;
                        if let Some(v) = &pod.metadata.resource_version {
                            version.clone_from(v);
                        }
                        self.seen(&pod);
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        self.not_found("was deleted");
                        return RoundEnd::Failed;
                    }
                    Ok(WatchEvent::Bookmark(mark)) => {
                        version = mark.metadata.resource_version;
                    }
                    Ok(WatchEvent::Error(status)) if status.code == 410 => {
                        return self.expired(started).await;
                    }
                    Ok(WatchEvent::Error(status)) => {
                        self.trouble(&kube::Error::Api(status));
                        return RoundEnd::Failed;
                    }
                    Err(err) => {
                        self.trouble(&err);
                        return RoundEnd::Failed;
                    }
                }
            }
            // The server ended the watch, as it does from time to time:
            // resume from the last version seen.
            tracing::debug!("the pod watch ended; watching again from version {version}");
            if !news && started.elapsed() < QUICK_END {
                self.pause().await;
            }
        }
    }

    /// `410 Gone`: the watch's version is too old; list again.
    async fn expired(&mut self, started: Instant) -> RoundEnd {
        tracing::debug!("the pod watch expired (410 Gone); listing the pod again");
        if started.elapsed() < QUICK_END {
            self.pause().await;
        }
        RoundEnd::Relist
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
    }

    /// Publishes the pod as seen now; a success clears the trouble.
    fn seen(&mut self, pod: &Pod) {
        self.backoff = BACKOFF_FIRST;
        if self.said.take().is_some() {
            tracing::info!("the Kubernetes API answers again");
        }
        let view = PodView::of(pod);
        self.news.send_if_modified(|news| {
            let changed = news.pod.as_ref() != Some(&view) || news.trouble.is_some();
            news.pod = Some(view);
            news.trouble = None;
            changed
        });
    }

    fn not_found(&mut self, how: &str) {
        let message = format!(
            "pod {}/{} {how}; check KUBEXIT_POD_NAME and KUBEXIT_NAMESPACE (set them from the \
             downward API: fieldRef metadata.name and metadata.namespace)",
            self.namespace, self.pod
        );
        self.publish(Kind::NotFound, message);
    }

    fn trouble(&mut self, err: &kube::Error) {
        let (kind, message) = match err {
            kube::Error::Api(status) => match status.code {
                403 => (
                    Kind::Forbidden,
                    format!(
                        "403 Forbidden ({}): kubexit needs to get, list and watch pods in \
                         namespace {ns}. Grant it to the pod's service account with a Role \
                         (apiGroups: [\"\"], resources: [\"pods\"], verbs: [\"get\", \"list\", \
                         \"watch\"]) and a RoleBinding in namespace {ns}; kubexit's \
                         docs/rbac.md has both",
                        status.message,
                        ns = self.namespace
                    ),
                ),
                401 => (
                    Kind::Unauthorized,
                    format!(
                        "401 Unauthorized ({}): the API server does not accept the service \
                         account token",
                        status.message
                    ),
                ),
                404 => {
                    self.not_found(&format!("was not found (404: {})", status.message));
                    return;
                }
                code => (
                    Kind::Other,
                    format!(
                        "the API server answered {code} {}: {}",
                        status.reason, status.message
                    ),
                ),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => (
                Kind::Unreachable,
                format!(
                    "cannot reach the Kubernetes API at {}: {}",
                    self.url,
                    chain(err)
                ),
            ),
            _ => (
                Kind::Other,
                format!("Kubernetes API request failed: {}", chain(err)),
            ),
        };
        self.publish(kind, message);
    }

    /// Logs a problem when its kind first appears, then retries quietly;
    /// the latest one stays in the news for the timeout's report.
    fn publish(&mut self, kind: Kind, message: String) {
        if self.said == Some(kind) {
            tracing::debug!("{message}; retrying");
        } else {
            tracing::warn!("{message}; retrying until the birth timeout");
            self.said = Some(kind);
        }
        self.news.send_modify(|news| news.trouble = Some(message));
    }
}

/// The HTTP status code of an API error, if it has one.
fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// An error and its sources, as one line.
fn chain(err: &kube::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn target(dir: &Path) -> PodTarget {
        PodTarget {
            name: "job-abc".into(),
            namespace: None,
            service_host: Some("10.0.0.1".into()),
            service_port: Some("443".into()),
            service_account_dir: dir.to_path_buf(),
        }
    }

    fn account() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "t").unwrap();
        fs::write(dir.path().join("namespace"), "batch\n").unwrap();
        dir
    }

    #[test]
    fn outside_a_cluster_is_said_at_once() {
        let dir = account();
        let mut t = target(dir.path());
        t.service_host = None;
        let err = Cluster::locate(&t).unwrap_err();
        assert!(err.contains("not running in a Kubernetes cluster"), "{err}");
        let mut t = target(dir.path());
        t.service_account_dir = dir.path().join("missing");
        let err = Cluster::locate(&t).unwrap_err();
        assert!(err.contains("no service account token"), "{err}");
    }

    #[test]
    fn namespace_from_the_setting_or_the_service_account() {
        let dir = account();
        let found = Cluster::locate(&target(dir.path())).unwrap();
        assert_eq!(found.namespace, "batch");
        assert_eq!(found.url, "https://10.0.0.1:443");
        let mut t = target(dir.path());
        t.namespace = Some("other".into());
        t.service_host = Some("fd00::1".into());
        let found = Cluster::locate(&t).unwrap();
        assert_eq!(found.namespace, "other");
        assert_eq!(found.url, "https://[fd00::1]:443");
    }

    fn pod(json: serde_json::Value) -> PodView {
        PodView::of(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn native_sidecars_restart_and_never_policy_containers_finish() {
        let view = pod(serde_json::json!({
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "server"}, {"name": "client"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "proxy", "ready": false, "restartCount": 1,
                    "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
                "containerStatuses": [{"name": "server", "ready": false, "restartCount": 0,
                    "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]
            }
        }));
        assert_eq!(view.declared, ["proxy", "server", "client"]);
        assert!(!view.statuses["proxy"].finished);
        assert!(view.statuses["server"].finished);
        assert_eq!(view.statuses["server"].state, "Error, exit code 2");
    }
}
