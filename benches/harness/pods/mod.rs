//! Jobs on a real node (issue 30): how long a Job takes, from its creation
//! to its end, with a sidecar stopped by kubexit (installed by its init
//! container, or carried by the images), by upstream's Go kubexit, or by the
//! kubelet as a native sidecar, beside the same Job's main container alone.
//!
//! What it does, in order:
//!
//! 1. **A node**: the single-node cluster of `../shared/peers/cluster`
//!    started for the run, or one named by `--node-env` (see `node`);
//! 2. **images** from the node's busybox with kubexit (the binary
//!    measured, which must be static) or the Go kubexit at `/bin/kubexit`;
//! 3. **the Jobs** of `jobs`, one at a time, in a namespace of their own:
//!    a warm-up Job of each way first (not counted: the node's first
//!    container from an image pays for its snapshot), then N runs of each,
//!    the ways taking turns run by run, the first of each round moved on by
//!    one, so that the node's drift falls on all alike. Each Job is created
//!    with a POST and followed through the API's watches until it is
//!    Complete or Failed (a deadline, never a fixed wait); then it is
//!    deleted, and the next one is created once its pod is gone, so that no
//!    Job's teardown runs beside another's start;
//! 4. **the report** (`pods.md`, `pods.json`, see `report`): each way's
//!    seconds from the POST to the Job's end, mean, median, min and max,
//!    and the ratio of means to the plain Job measured in the same run;
//!    what the install step costs (the installed way less the one whose
//!    images carry kubexit); and where the time goes, each step as first
//!    seen in the pod's status.
//!
//! The smoke run measures nothing here unless `--only pods` asks for it
//! (one run of each, no warm-up): a node takes seconds to start and the
//! Jobs a minute. Without it, it makes every way's Job through
//! `kubexit inject` and checks it ([`jobs::check_all`]), which needs no
//! node.

pub mod jobs;
mod node;
mod report;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use self::jobs::Variant;
use self::node::{Event, Node};
use crate::programs;

/// How long one Job may take to end, and its pod to be gone after.
/// Generous: on this node a Job ends in 5 to 10 s.
const DEADLINE: Duration = Duration::from_secs(180);

/// What one invocation asks for.
pub struct Settings<'a> {
    /// kubexit, static: it runs in the images.
    pub kubexit: &'a Path,
    /// The Go kubexit, static; without it, (d) is left out.
    pub go: Option<&'a Path>,
    /// `../shared/peers/cluster`, when there.
    pub cluster: Option<PathBuf>,
    /// A node already up (`cluster/up`'s env file), instead of one
    /// started for the run.
    pub node_env: Option<&'a Path>,
    pub runs: usize,
    pub warm_up: bool,
    pub out: &'a Path,
    pub command: String,
    pub revision: Option<String>,
}

/// What became of the measurement.
pub enum Outcome {
    /// The report's Markdown (also in `pods.md`).
    Measured(String),
    /// Not measured, and why.
    Skipped(String),
}

/// One Job, followed to its end.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From the POST to the Job's `Complete` or `Failed`.
    pub to_end: Duration,
    /// `Complete` or `Failed`.
    pub ended: String,
    /// The POST itself (curl started, request sent, answer read).
    pub post: Duration,
    pub steps: Steps,
    /// How the sidecar ended, where there is one.
    pub sidecar_exit: Option<i64>,
}

/// When each step of a Job was first seen in its pod's status, after the
/// POST.
#[derive(Debug, Clone, Default)]
pub struct Steps {
    pub scheduled: Option<Duration>,
    /// The install container ended.
    pub installed: Option<Duration>,
    pub main_running: Option<Duration>,
    pub main_ended: Option<Duration>,
    pub sidecar_ended: Option<Duration>,
    /// Phase `Succeeded` or `Failed`.
    pub pod_ended: Option<Duration>,
}

impl Steps {
    /// Notes what `pod`, seen `after` the POST, shows for the first time.
    fn note(&mut self, after: Duration, pod: &Value) {
        let first = |slot: &mut Option<Duration>, seen: bool| {
            if seen && slot.is_none() {
                *slot = Some(after);
            }
        };
        first(
            &mut self.scheduled,
            pod["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
        );
        let state = |list: &str, name: &str| -> Value {
            pod["status"][list]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["name"] == name))
                .map_or(Value::Null, |s| s["state"].clone())
        };
        first(
            &mut self.installed,
            state("initContainerStatuses", "kubexit")["terminated"].is_object(),
        );
        let main = state("containerStatuses", "main");
        first(
            &mut self.main_running,
            main["running"].is_object() || main["terminated"].is_object(),
        );
        first(&mut self.main_ended, main["terminated"].is_object());
        let sidecar_ended = ["containerStatuses", "initContainerStatuses"]
            .iter()
            .any(|list| state(list, "sidecar")["terminated"].is_object());
        first(&mut self.sidecar_ended, sidecar_ended);
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        first(
            &mut self.pod_ended,
            phase == "Succeeded" || phase == "Failed",
        );
    }
}

/// Every sample of one way.
pub struct Series {
    pub variant: Variant,
    pub samples: Vec<Sample>,
}

/// Why the measurement cannot run here, if it cannot.
fn missing(settings: &Settings) -> Option<String> {
    let static_binary =
        crate::footprint::size(&crate::subjects::Subject::kubexit(settings.kubexit))
            .ok()
            .and_then(|size| size.is_static);
    if static_binary != Some(true) {
        return Some(format!(
            "{} is not a static binary, and the pods run it in busybox images; give --kubexit \
             target/static/kubexit (scripts/build-static.sh builds it)",
            settings.kubexit.display()
        ));
    }
    if settings.cluster.is_none() {
        return Some(
            "no ../shared/peers/cluster (nor KUBEXIT_SHARED): the node lives there".into(),
        );
    }
    if crate::limits::own_uid() != 0 {
        return Some("a node (kubelet, containerd) and its images need root".into());
    }
    for tool in ["curl", "buildah"] {
        if programs::which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (../shared/peers/cluster/up installs it)"
            ));
        }
    }
    None
}

/// Runs the Jobs and writes `pods.md` and `pods.json` in `settings.out`.
pub fn measure(settings: &Settings) -> Result<Outcome, String> {
    if let Some(why) = missing(settings) {
        return Ok(Outcome::Skipped(why));
    }
    let cluster = settings.cluster.as_deref().expect("checked by missing");
    let machine = crate::report::Machine::detect(Path::new("/"));
    let when = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let node = match settings.node_env {
        Some(env) => Node::given(env)?,
        None => Node::start(cluster)?,
    };
    let mut binaries = vec![(jobs::KUBEXIT_IMAGE, settings.kubexit)];
    binaries.extend(settings.go.map(|go| (jobs::GO_IMAGE, go)));
    eprintln!("pods: building and loading the images");
    node.load_images(cluster, &binaries)?;
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| *v != Variant::Go || settings.go.is_some())
        .collect();
    let rounds = settings.runs + usize::from(settings.warm_up);
    // Every Job made before the first is created: `kubexit inject` is not
    // the node's time. `made[round][i]` is the Job of `variants[i]`.
    let made = (0..rounds)
        .map(|round| {
            variants
                .iter()
                .map(|v| jobs::of(*v, &format!("{}-{round}", v.key()), settings.kubexit))
                .collect::<Result<Vec<Value>, String>>()
        })
        .collect::<Result<Vec<_>, String>>()?;

    let namespace = format!("kubexit-bench-pods-{}", std::process::id());
    let run = Run::open(&node, &namespace)?;
    let mut series: Vec<Series> = variants
        .iter()
        .map(|&variant| Series {
            variant,
            samples: Vec::new(),
        })
        .collect();
    let load_at_start = crate::report::load_average();
    for (round, jobs) in made.iter().enumerate() {
        let warm_up = settings.warm_up && round == 0;
        // Each round starts with the next way: no way is always first.
        for turn in 0..variants.len() {
            let i = (turn + round) % variants.len();
            let variant = variants[i];
            let sample = run.job(&jobs[i])?;
            eprintln!(
                "pods: {} ({}) {}: {:.2} s, {}",
                if warm_up {
                    "warm-up".to_owned()
                } else {
                    format!(
                        "run {}/{}",
                        round + 1 - usize::from(settings.warm_up),
                        settings.runs
                    )
                },
                variant.letter(),
                variant.label(),
                sample.to_end.as_secs_f64(),
                sample.ended
            );
            if !warm_up {
                series[i].samples.push(sample);
            }
        }
    }
    let load_at_end = crate::report::load_average();
    run.close();
    let report = report::Report {
        when,
        machine,
        load_at_start,
        load_at_end,
        command: settings.command.clone(),
        revision: settings.revision.clone(),
        node: node.origin.clone(),
        kubexit: settings.kubexit.to_path_buf(),
        go: settings.go.map(Path::to_path_buf),
        runs: settings.runs,
        warm_up: settings.warm_up,
        series,
    };
    drop(node);
    let markdown = report.markdown();
    report.write(settings.out, &markdown)?;
    Ok(Outcome::Measured(markdown))
}

/// The namespace the Jobs run in, with its two watches.
struct Run<'n> {
    node: &'n Node,
    namespace: String,
    events: Receiver<Event>,
    _watches: [node::Watch; 2],
}

impl<'n> Run<'n> {
    fn open(node: &'n Node, namespace: &str) -> Result<Run<'n>, String> {
        node.expect(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": namespace}})),
            &[201],
        )?;
        // The controller-manager makes it too; whichever comes first.
        node.expect(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            Some(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "default"}})),
            &[201, 409],
        )?;
        let (sender, events) = mpsc::channel();
        let watches = [
            node.watch(
                &format!("/apis/batch/v1/namespaces/{namespace}/jobs"),
                sender.clone(),
            )?,
            node.watch(&format!("/api/v1/namespaces/{namespace}/pods"), sender)?,
        ];
        Ok(Run {
            node,
            namespace: namespace.to_owned(),
            events,
            _watches: watches,
        })
    }

    /// Creates `job`, follows it to its end, deletes it and waits for its
    /// pod to be gone.
    fn job(&self, job: &Value) -> Result<Sample, String> {
        let name = job["metadata"]["name"].as_str().unwrap_or_default();
        // Events of the Jobs before (their pods' last updates) are theirs.
        while self.events.try_recv().is_ok() {}
        let posted = Instant::now();
        self.node.expect(
            "POST",
            &format!("/apis/batch/v1/namespaces/{}/jobs", self.namespace),
            Some(job),
            &[201],
        )?;
        let post = posted.elapsed();
        let mut steps = Steps::default();
        let mut last_pod = Value::Null;
        let mut pods: Vec<String> = Vec::new();
        let (to_end, ended) = loop {
            let (at, kind, object) = self.next(posted, || {
                format!("Job {name} to end; its pod now: {}", last_pod["status"])
            })?;
            let after = at.saturating_duration_since(posted);
            match object["kind"].as_str() {
                Some("Pod") if object["metadata"]["labels"]["job-name"] == name => {
                    let pod = object["metadata"]["name"].as_str().unwrap_or_default();
                    if !pods.iter().any(|p| p == pod) {
                        pods.push(pod.to_owned());
                    }
                    if kind != "DELETED" {
                        steps.note(after, &object);
                        last_pod = object;
                    }
                }
                Some("Job") if object["metadata"]["name"] == name => {
                    if let Some(ended) = job_ended(&object) {
                        break (after, ended);
                    }
                }
                _ => {}
            }
        };
        self.node.expect(
            "DELETE",
            &format!(
                "/apis/batch/v1/namespaces/{}/jobs/{name}?propagationPolicy=Background",
                self.namespace
            ),
            None,
            &[200, 202],
        )?;
        let deleted = Instant::now();
        while !pods.is_empty() {
            let (_, kind, object) = self.next(deleted, || {
                format!("the pods of Job {name} ({}) to be deleted", pods.join(", "))
            })?;
            if kind == "DELETED" && object["kind"] == "Pod" {
                let pod = object["metadata"]["name"].as_str().unwrap_or_default();
                pods.retain(|p| p != pod);
            }
        }
        Ok(Sample {
            to_end,
            ended,
            post,
            steps,
            sidecar_exit: sidecar_exit(&last_pod),
        })
    }

    /// The next event of either watch, within [`DEADLINE`] of `since`.
    fn next(
        &self,
        since: Instant,
        waiting_for: impl Fn() -> String,
    ) -> Result<(Instant, String, Value), String> {
        let left = DEADLINE.saturating_sub(since.elapsed());
        match self.events.recv_timeout(left) {
            Ok(Event::Seen { at, kind, object }) => Ok((at, kind, object)),
            Ok(Event::Broken(why)) => Err(why),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "timed out after {DEADLINE:?} waiting for {}",
                waiting_for()
            )),
            Err(RecvTimeoutError::Disconnected) => Err("the watches ended".into()),
        }
    }

    /// Deletes the namespace (without waiting: a node started for the run
    /// goes down next).
    fn close(self) {
        let _ = self.node.request(
            "DELETE",
            &format!("/api/v1/namespaces/{}", self.namespace),
            None,
        );
    }
}

/// `Complete` or `Failed`, once the Job has one of them true.
fn job_ended(job: &Value) -> Option<String> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"))
        .and_then(|c| c["type"].as_str())
        .map(str::to_owned)
}

/// The sidecar's exit code in the pod's last status.
fn sidecar_exit(pod: &Value) -> Option<i64> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|list| pod["status"][*list].as_array().into_iter().flatten())
        .find(|s| s["name"] == "sidecar")
        .and_then(|s| s["state"]["terminated"]["exitCode"].as_i64())
}
