//! `kubexit inject` and `kubexit uninject`, through the built binary: the
//! golden files of every kind, the examples, idempotence, exact undoing,
//! every kind of bad input, and the typed round trip through k8s-openapi.
//! The real API server's verdict is in `inject_kubernetes.rs`.

use std::fs;
use std::path::Path;

use kubexit::inject::{self, Options, manifest};
use serde_json::{Value, json};

use crate::util::{
    self, Finished, assert_contains, assert_lacks,
    files::{assert_golden, fixtures, golden_inputs, injected_path, root},
    kubexit, kubexit_with_input,
};

const TEST_IMAGE: &str = "registry.example/kubexit:test";

/// `kubexit ARGS...` with `input` on standard input.
fn run(args: &[&str], input: Option<&str>) -> Finished {
    kubexit_with_input(args, input)
}

/// Runs and expects success; returns standard output.
fn ok(args: &[&str], input: Option<&str>) -> String {
    let done = run(args, input);
    assert_eq!(done.code(), 0, "kubexit {args:?} failed:\n{}", done.stderr);
    done.stdout
}

/// Runs and expects a refusal: exit 2, nothing on standard output; returns
/// standard error.
fn refused(args: &[&str], input: &str) -> String {
    let done = run(args, Some(input));
    assert_eq!(
        done.code(),
        2,
        "expected exit 2 from {args:?}:\n{}",
        done.stderr
    );
    assert_eq!(done.stdout, "", "nothing may be written on a refusal");
    done.stderr
}

fn documents(text: &str) -> Vec<Value> {
    manifest::parse(text, "test").unwrap()
}

#[test]
fn injecting_each_golden_manifest_gives_its_golden_output() {
    let inputs = golden_inputs("inject");
    assert_eq!(inputs.len(), 4, "{inputs:?}");
    for input in inputs {
        let out = ok(
            &["inject", "--image", TEST_IMAGE, input.to_str().unwrap()],
            None,
        );
        assert_golden(&injected_path(&input), &out);
    }
}

#[test]
fn injecting_an_injected_manifest_changes_nothing() {
    for input in golden_inputs("inject") {
        let golden = injected_path(&input);
        let once = fs::read_to_string(&golden).unwrap();
        let twice = ok(
            &["inject", "--image", TEST_IMAGE, golden.to_str().unwrap()],
            None,
        );
        assert_eq!(twice, once, "{}", golden.display());
        // Without the flag that was given the first time, too: the record
        // keeps what the flags set.
        let again = ok(&["inject", "-"], Some(&once));
        assert_eq!(
            again,
            once,
            "{} re-injected without --image",
            golden.display()
        );
    }
}

#[test]
fn uninject_gives_back_the_original_objects_exactly() {
    for input in golden_inputs("inject") {
        let original = documents(&fs::read_to_string(&input).unwrap());
        let golden = injected_path(&input);
        for command in [vec!["uninject"], vec!["inject", "--uninject"]] {
            let mut args = command.clone();
            args.push(golden.to_str().unwrap());
            let back = ok(&args, None);
            // The same text as the original's objects written by kubexit:
            // field order included, not only equal objects.
            assert_eq!(back, manifest::to_yaml(&original).unwrap(), "{args:?}");
        }
    }
}

#[test]
fn the_sidecar_of_the_issue_is_stopped_by_all_mains_which_wait_for_its_readiness() {
    let out = ok(
        &[
            "inject",
            fixtures("inject")
                .join("sidecar-job.yaml")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    let job = &documents(&out)[0];
    let containers = job["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let env = |name: &str| -> Vec<(String, String)> {
        let c = containers.iter().find(|c| c["name"] == name).unwrap();
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().starts_with("KUBEXIT_"))
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect()
    };
    assert_eq!(
        env("proxy"),
        pairs(&[
            ("KUBEXIT_NAME", "proxy"),
            ("KUBEXIT_GRAVEYARD", "/graveyard"),
            ("KUBEXIT_DEATH_DEPS", "extract,load"),
            ("KUBEXIT_DEATH_POLICY", "all"),
            ("KUBEXIT_READY_PROBE", "http://127.0.0.1:9090/readiness"),
        ])
    );
    for main in ["extract", "load"] {
        assert_eq!(
            env(main),
            pairs(&[
                ("KUBEXIT_NAME", main),
                ("KUBEXIT_GRAVEYARD", "/graveyard"),
                ("KUBEXIT_BIRTH_DEPS", "proxy"),
            ])
        );
    }
    // The user's own fields are untouched.
    let proxy = containers.iter().find(|c| c["name"] == "proxy").unwrap();
    assert_eq!(
        proxy["command"],
        json!(["/kubexit/kubexit", "/cloud-sql-proxy"])
    );
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(proxy["securityContext"], json!({"runAsNonRoot": true}));
    let load = containers.iter().find(|c| c["name"] == "load").unwrap();
    assert_eq!(load["args"], json!(["psql -h 127.0.0.1 -c \"select 2\""]));
    assert_eq!(load["env"][0], json!({"name": "PGUSER", "value": "report"}));
}

#[test]
fn without_a_readiness_probe_the_mains_do_not_wait() {
    let plain = fs::read_to_string(fixtures("inject").join("sidecar-job.yaml")).unwrap();
    let mut job = documents(&plain).remove(0);
    let proxy = &mut job["spec"]["template"]["spec"]["containers"][2];
    proxy
        .as_object_mut()
        .unwrap()
        .shift_remove("readinessProbe");
    let out = ok(&["inject", "-o", "json"], Some(&job.to_string()));
    assert_lacks(&out, "KUBEXIT_BIRTH_DEPS");
    assert_lacks(&out, "KUBEXIT_READY_PROBE");
    assert_contains(&out, "KUBEXIT_DEATH_POLICY");
}

/// Injecting `examples/plain/NAME` gives `examples/NAME`, the hand-written
/// manifest, once the `kubexit.io/` annotations (which the hand-written
/// one does without) are set aside.
#[test]
fn injecting_the_plain_examples_gives_the_hand_written_ones() {
    let mut checked = Vec::new();
    for entry in fs::read_dir(root().join("examples/plain")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = ok(
            &[
                "inject",
                "--image",
                "ghcr.io/kubexit/kubexit:latest",
                path.to_str().unwrap(),
            ],
            None,
        );
        let mut injected = documents(&out);
        for document in &mut injected {
            drop_kubexit_annotations(document.pointer_mut("/spec/template").unwrap());
        }
        let hand_written =
            documents(&fs::read_to_string(root().join("examples").join(&file)).unwrap());
        assert_eq!(
            manifest::to_yaml(&injected).unwrap(),
            manifest::to_yaml(&hand_written).unwrap(),
            "examples/plain/{file} does not inject into examples/{file}"
        );
        checked.push(file);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "client-server-job-graveyard.yaml",
            "cloudsql-proxy-job.yaml"
        ]
    );
}

fn drop_kubexit_annotations(template: &mut Value) {
    let metadata = template["metadata"].as_object_mut().unwrap();
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.retain(|k, _| !k.starts_with("kubexit.io/"));
        if annotations.is_empty() {
            metadata.shift_remove("annotations");
        }
    }
    if metadata.is_empty() {
        template.as_object_mut().unwrap().shift_remove("metadata");
    }
}

#[test]
fn every_injected_object_round_trips_through_the_k8s_openapi_types() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, ReplicationController, Service};
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(origin: &str, doc: &Value) {
        let object: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", doc["kind"]));
        let back = serde_json::to_value(&object).unwrap();
        assert_eq!(
            &back, doc,
            "{origin}: fields were lost parsing {}",
            doc["kind"]
        );
    }
    let mut kinds = std::collections::BTreeSet::new();
    for input in golden_inputs("inject") {
        let golden = injected_path(&input);
        let origin = golden.display().to_string();
        let mut queue = documents(&fs::read_to_string(&golden).unwrap());
        while let Some(doc) = queue.pop() {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "Pod" => typed::<Pod>(&origin, &doc),
                "Job" => typed::<Job>(&origin, &doc),
                "CronJob" => typed::<CronJob>(&origin, &doc),
                "Deployment" => typed::<Deployment>(&origin, &doc),
                "StatefulSet" => typed::<StatefulSet>(&origin, &doc),
                "DaemonSet" => typed::<DaemonSet>(&origin, &doc),
                "ReplicaSet" => typed::<ReplicaSet>(&origin, &doc),
                "ReplicationController" => typed::<ReplicationController>(&origin, &doc),
                "ConfigMap" => typed::<ConfigMap>(&origin, &doc),
                "Service" => typed::<Service>(&origin, &doc),
                "List" => queue.extend(doc["items"].as_array().unwrap().iter().cloned()),
                other => panic!("{origin}: no typed check for {other}"),
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "Pod",
        "Job",
        "CronJob",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "List",
    ] {
        assert!(kinds.contains(kind), "no golden file has a {kind}");
    }
}

#[test]
fn fields_kubexit_does_not_know_are_kept() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "x-future": {"a": 1}},
        "spec": {
            "someFutureField": [1, 2],
            "containers": [{"name": "app", "image": "i", "command": ["x"], "futureKnob": true}]
        },
        "status": {"phase": "Pending"}
    });
    let injected = inject::inject(&pod, &Options::default()).unwrap();
    let t = &injected.template;
    assert_eq!(t["spec"]["someFutureField"], json!([1, 2]));
    assert_eq!(t["spec"]["containers"][0]["futureKnob"], json!(true));
    assert_eq!(t["metadata"]["x-future"], json!({"a": 1}));
    assert_eq!(t["status"], json!({"phase": "Pending"}));
    assert_eq!(inject::uninject(t).unwrap(), pod);
}

/// The one change to what the user wrote that uninject does not take
/// back (the transformation's essay names it): a list or map kubexit adds
/// to that stands as `null` is replaced, and left out once taken away.
#[test]
fn a_null_list_or_map_kubexit_adds_to_is_replaced_and_left_out_when_uninjected() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": null},
        "spec": {
            "containers": [{"name": "app", "image": "i", "command": ["x"], "env": null}]
        }
    });
    let injected = inject::inject(&pod, &Options::default()).unwrap();
    let t = &injected.template;
    assert!(t["spec"]["containers"][0]["env"].is_array(), "{t}");
    assert!(t["metadata"]["annotations"].is_object(), "{t}");
    let mut without_nulls = pod.clone();
    without_nulls["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    without_nulls["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("env");
    assert_eq!(inject::uninject(t).unwrap(), without_nulls);
}

#[test]
fn flags_set_annotations_that_uninject_takes_back() {
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    kubexit.io/sidecars: app\nspec:\n  containers:\n  - name: app\n    image: i\n    command: [a]\n  - name: proxy\n    image: i\n";
    // The flag overrides the pod's own annotation; the entrypoint flag
    // gives the container without command its command.
    let out = ok(
        &[
            "inject",
            "--sidecars",
            "proxy",
            "--entrypoint",
            "proxy=/envoy -l info",
            "-a",
            "grace-period=5s",
        ],
        Some(plain),
    );
    let pod = &documents(&out)[0];
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["kubexit.io/sidecars"], "proxy");
    assert_eq!(annotations["kubexit.io/entrypoint.proxy"], "/envoy -l info");
    assert_eq!(annotations["kubexit.io/grace-period"], "5s");
    assert_eq!(
        pod["spec"]["containers"][1]["command"],
        json!(["/kubexit/kubexit", "/envoy", "-l", "info"])
    );
    let back = ok(&["uninject"], Some(&out));
    assert_eq!(back, manifest::to_yaml(&documents(plain)).unwrap());
}

/// The names of the entries of a list field of `object` (`volumes`,
/// `initContainers`, `volumeMounts`).
fn names_in(object: &Value, field: &str) -> Vec<String> {
    object[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `kubexit.io/install: none`: the images carry kubexit, so nothing
/// installs it: no init container, no volume for the binary, no mount of
/// it, and every wrapped command starts with `kubexit`, found on the
/// container's PATH. The graveyard stays.
#[test]
fn install_none_adds_no_init_container_nor_binary_volume_and_runs_kubexit_from_the_path() {
    let plain = pod_with("{kubexit.io/sidecars: proxy, kubexit.io/skip: mesh}");
    let out = ok(&["inject", "--install", "none"], Some(&plain));
    let pod = &documents(&out)[0];
    assert_eq!(pod["metadata"]["annotations"]["kubexit.io/install"], "none");
    assert_eq!(names_in(&pod["spec"], "initContainers"), ["setup"]);
    assert_eq!(names_in(&pod["spec"], "volumes"), ["graveyard"]);
    for (i, first) in [(0, "serve"), (1, "proxy")] {
        let container = &pod["spec"]["containers"][i];
        assert_eq!(
            container["command"],
            json!(["kubexit", first]),
            "{container}"
        );
        assert_eq!(names_in(container, "volumeMounts"), ["graveyard"]);
    }
    assert_lacks(&out, "/kubexit");
    // Reversible and idempotent, as every injection.
    let back = ok(&["uninject"], Some(&out));
    assert_eq!(back, manifest::to_yaml(&documents(&plain)).unwrap());
    assert_eq!(ok(&["inject", "-"], Some(&out)), out);
}

/// Re-injecting with another install starts again from the plain pod, so
/// that what the old one added is gone, whichever way.
#[test]
fn changing_the_install_of_an_injected_pod_gives_what_injecting_the_plain_pod_gives() {
    let plain = pod_with("{kubexit.io/sidecars: proxy, kubexit.io/skip: mesh}");
    let copied = ok(&["inject"], Some(&plain));
    let carried = ok(&["inject", "--install", "none"], Some(&plain));
    assert_eq!(ok(&["inject", "--install", "none"], Some(&copied)), carried);
    assert_eq!(ok(&["inject", "--install", "cp"], Some(&carried)), {
        ok(&["inject", "--install", "cp"], Some(&plain))
    });
    assert_eq!(
        ok(&["uninject"], Some(&carried)),
        ok(&["uninject"], Some(&copied))
    );
}

/// Without an install container, its names are free: a pod may have an
/// init container, a volume and a mount path of its own named as kubexit's
/// install would name them.
#[test]
fn with_install_none_the_names_of_the_install_step_are_the_pods_to_use() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: own}\nspec:\n  initContainers:\n  - {name: kubexit, image: i, command: [prepare]}\n  containers:\n  - name: app\n    image: i\n    command: [a]\n    volumeMounts: [{name: kubexit, mountPath: /kubexit}]\n  volumes:\n  - {name: kubexit, emptyDir: {}}\n";
    let err = refused(&["inject"], pod);
    assert_contains(&err, "the pod already has a volume named kubexit");
    let out = ok(&["inject", "--install", "none"], Some(pod));
    let injected = &documents(&out)[0];
    assert_eq!(names_in(&injected["spec"], "initContainers"), ["kubexit"]);
    assert_eq!(
        names_in(&injected["spec"], "volumes"),
        ["graveyard", "kubexit"]
    );
    assert_eq!(
        names_in(&injected["spec"]["containers"][0], "volumeMounts"),
        ["kubexit", "graveyard"]
    );
    assert_eq!(
        ok(&["uninject"], Some(&out)),
        manifest::to_yaml(&documents(pod)).unwrap()
    );
    // A graveyard of its own is still a conflict.
    let err = refused(
        &["inject", "--install", "none"],
        &pod.replace("name: kubexit, emptyDir", "name: graveyard, emptyDir"),
    );
    assert_contains(&err, "the pod already has a volume named graveyard");
}

#[test]
fn install_none_with_an_install_image_on_the_command_line_is_refused() {
    let done = run(
        &["inject", "--install", "none", "--image", TEST_IMAGE],
        Some(&pod_with("{kubexit.io/skip: mesh}")),
    );
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert_eq!(done.stdout, "");
    assert_contains(&done.stderr, "--install none adds none");
    // An install that is none of the three is refused, naming them.
    let err = refused(
        &["inject", "-a", "install=copy"],
        &pod_with("{kubexit.io/skip: mesh}"),
    );
    assert_contains(&err, "is not cp (the image has cp), self");
    assert_contains(&err, "or none (the images carry kubexit)");
}

/// The record says which word it put before the commands, so that a
/// command edited since is refused naming that word rather than guessed
/// at.
#[test]
fn uninject_of_install_none_refuses_a_command_that_no_longer_starts_with_kubexit() {
    let out = ok(
        &["inject", "--install", "none"],
        Some(&pod_with("{kubexit.io/skip: mesh}")),
    );
    let edited = out.replacen("- kubexit\n", "- /usr/bin/kubexit\n", 1);
    assert_ne!(edited, out);
    let err = refused(&["uninject"], &edited);
    assert_contains(&err, "its command no longer starts with kubexit,");
}

#[test]
fn json_in_json_out_and_standard_input() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "i", "command": ["a"]}]}});
    let out = ok(&["inject", "-o", "json", "-"], Some(&pod.to_string()));
    let back: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        back["spec"]["containers"][0]["command"],
        json!(["/kubexit/kubexit", "a"])
    );
    assert_eq!(back["spec"]["initContainers"][0]["name"], "kubexit");
}

#[test]
fn each_object_is_reported_on_standard_error() {
    let done = run(
        &[
            "inject",
            fixtures("inject").join("kinds.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    for line in [
        "Job job: injected into app, proxy",
        "ConfigMap passes-through: passed through (no pod template)",
        "Deployment opted-out: not injected",
        "Pod pod-in-a-list: injected into app",
    ] {
        assert!(
            done.stderr.contains(line),
            "{line:?} not in:\n{}",
            done.stderr
        );
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: ANNOTATIONS
spec:
  initContainers:
  - name: setup
    image: i
    command: [true]
  containers:
  - name: app
    image: i
    command: [serve]
  - name: proxy
    image: i
    command: [proxy]
  - name: mesh
    image: i
";

fn pod_with(annotations: &str) -> String {
    POD.replace("ANNOTATIONS", annotations)
}

#[test]
fn a_container_without_command_is_refused_naming_it_and_the_fix_when_offline() {
    // Offline, as before images were read from their registries.
    let err = refused(
        &["inject", "--offline"],
        &pod_with("{kubexit.io/sidecars: proxy}"),
    );
    assert_contains(&err, "Pod web: container mesh has no command");
    assert_contains(&err, "--entrypoint mesh=CMD");
    assert_contains(&err, "add `command`");
    // With the fix, it works; or leave it alone.
    ok(
        &["inject", "--entrypoint", "mesh=/mesh"],
        Some(&pod_with("{}")),
    );
    ok(&["inject", "--skip", "mesh"], Some(&pod_with("{}")));
}

#[test]
fn bad_input_is_refused_with_the_object_and_what_to_change() {
    let cases: &[(&str, &str)] = &[
        (
            "{kubexit.io/sidecar: proxy, kubexit.io/skip: mesh}",
            "unknown annotation kubexit.io/sidecar; did you mean kubexit.io/sidecars?",
        ),
        (
            "{kubexit.io/sidecars: proxx, kubexit.io/skip: mesh}",
            "kubexit.io/sidecars names proxx, which is not a container of this pod; did you mean proxy?",
        ),
        (
            "{kubexit.io/sidecars: nope, kubexit.io/skip: mesh}",
            "(its containers: app, proxy, mesh)",
        ),
        (
            "{kubexit.io/sidecars: setup, kubexit.io/skip: mesh}",
            "names setup, an init container",
        ),
        (
            "{kubexit.io/birth-deps.app: proxy, kubexit.io/birth-deps.proxy: app, kubexit.io/skip: mesh}",
            "birth dependencies form a cycle, so none of these containers would ever start: app -> proxy -> app",
        ),
        (
            "{kubexit.io/death-deps.app: app, kubexit.io/skip: mesh}",
            "container app cannot depend on itself",
        ),
        (
            "{kubexit.io/grace-period: '30', kubexit.io/skip: mesh}",
            "annotation kubexit.io/grace-period: \"30\" is not a duration",
        ),
        (
            "{kubexit.io/ready-probe.proxy: 'tcp://x', kubexit.io/skip: mesh}",
            "is not a probe",
        ),
        (
            "{kubexit.io/sidecars: 'app,proxy', kubexit.io/skip: mesh}",
            "kubexit.io/sidecars names every coordinated container",
        ),
        (
            "{kubexit.io/sidecars: mesh, kubexit.io/skip: mesh}",
            "which kubexit.io/skip leaves alone",
        ),
        (
            "{kubexit.io/grace-period.mesh: 1s, kubexit.io/skip: mesh}",
            "which kubexit.io/skip leaves alone",
        ),
    ];
    for (annotations, message) in cases {
        let err = refused(&["inject"], &pod_with(annotations));
        assert!(
            err.contains("Pod web: "),
            "{annotations}: the object is not named: {err}"
        );
        assert!(
            err.contains(message),
            "{annotations}: expected {message:?} in:\n{err}"
        );
    }
}

#[test]
fn a_sidecar_whose_readiness_probe_kubexit_cannot_run_is_refused() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: g, annotations: {kubexit.io/sidecars: proxy}}\nspec:\n  containers:\n  - {name: app, image: i, command: [a]}\n  - name: proxy\n    image: i\n    command: [p]\n    readinessProbe: {grpc: {port: 9000}}\n";
    let err = refused(&["inject"], pod);
    assert_contains(&err, "container proxy is waited for");
    assert_contains(&err, "set kubexit.io/ready-probe.proxy");
    ok(
        &["inject", "-a", "ready-probe.proxy=tcp://127.0.0.1:9000"],
        Some(pod),
    );
}

#[test]
fn invalid_yaml_and_json_are_refused_naming_the_input() {
    let err = refused(&["inject"], "apiVersion: v1\nkind: [Pod\n");
    assert_contains(&err, "standard input: not valid YAML");
    let err = refused(&["inject"], "{\"apiVersion\": \"v1\", \"kind\": ");
    assert_contains(&err, "standard input: not valid JSON");
    let err = refused(&["inject"], "just a string\n");
    assert_contains(&err, "document 1: not a Kubernetes object");
    let done = kubexit().args(["inject", "/nonexistent/job.yaml"]).run();
    assert_eq!(done.code(), 2);
    assert_contains(&done.stderr, "/nonexistent/job.yaml: cannot read");
}

#[test]
fn one_bad_object_means_nothing_is_written_and_every_error_is_said() {
    let good = pod_with("{kubexit.io/skip: mesh}");
    let bad = pod_with("{kubexit.io/sidecars: nope}").replace("name: web", "name: bad");
    let err = refused(
        &["inject"],
        &format!(
            "{good}---\n{bad}---\n{}",
            bad.replace("name: bad", "name: worse")
        ),
    );
    assert_contains(&err, "Pod bad: ");
    assert_contains(&err, "Pod worse: ");
}

#[test]
fn annotations_on_a_workloads_own_metadata_are_refused_with_where_they_go() {
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n  annotations: {kubexit.io/sidecars: proxy}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: app, image: i, command: [a]}]\n";
    let err = refused(&["inject"], job);
    assert_contains(&err, "move it to spec.template.metadata.annotations");
}

#[test]
fn a_hand_coordinated_container_is_not_wrapped_twice() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  containers:\n  - {name: app, image: i, command: [/kubexit/kubexit, a], env: [{name: KUBEXIT_NAME, value: app}]}\n";
    let err = refused(&["inject"], pod);
    assert_contains(&err, "container app already runs kubexit");
}

#[test]
fn a_variable_the_container_sets_itself_is_a_conflict() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: v, annotations: {kubexit.io/grace-period: 5s}}\nspec:\n  containers:\n  - {name: app, image: i, command: [a], env: [{name: KUBEXIT_GRACE_PERIOD, value: 9s}]}\n";
    let err = refused(&["inject"], pod);
    assert_contains(&err, "container app sets KUBEXIT_GRACE_PERIOD itself");
    // A variable inject does not set is the user's to keep.
    let pod = pod.replace("KUBEXIT_GRACE_PERIOD", "KUBEXIT_LOG_FORMAT");
    let out = ok(&["inject"], Some(&pod));
    assert_contains(&out, "KUBEXIT_LOG_FORMAT");
}

#[test]
fn a_supervising_kubexit_still_runs_a_command_named_inject() {
    // With KUBEXIT_NAME set, `inject` is the child, as upstream: here it
    // does not exist, so kubexit says so with status 127.
    let yard = util::Yard::new();
    let done = util::Kubexit::named("app", &yard)
        .args(["inject", "x.yaml"])
        .run();
    assert_eq!(done.code(), 127, "{}", done.stderr);
    assert_eq!(done.stdout, "");
}

#[test]
fn inject_help_describes_the_subcommand() {
    let help = ok(&["inject", "--help"], None);
    for needle in [
        "kubexit inject [OPTIONS] [FILE]...",
        "--uninject",
        "--entrypoint",
        "--install <cp|self|none>",
        "kubectl apply -f -",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
}

/// Where the text of the docs' example WHICH stands in `doc`: between the
/// ```` ```yaml ```` line right after `<!-- inject-example: WHICH -->` and
/// the next ```` ``` ```` line. The marker must stand once, on a line of
/// its own; otherwise there is no one block to read or rewrite.
fn example_block(doc: &str, which: &str) -> Result<std::ops::Range<usize>, String> {
    let marker = format!("<!-- inject-example: {which} -->");
    let at: Vec<usize> = doc.match_indices(&marker).map(|(i, _)| i).collect();
    let &[at] = at.as_slice() else {
        return Err(format!(
            "{marker} stands {} times in the page, not once",
            at.len()
        ));
    };
    let line_start = at == 0 || doc[..at].ends_with('\n');
    let opening = format!("{marker}\n```yaml\n");
    if !line_start || !doc[at..].starts_with(&opening) {
        return Err(format!(
            "{marker} must be a line of its own, followed by a ```yaml line"
        ));
    }
    let start = at + opening.len();
    let end = doc[start..]
        .match_indices("```")
        .map(|(i, _)| start + i)
        .find(|&i| doc[..i].ends_with('\n') && doc[i..].starts_with("```\n"))
        .ok_or_else(|| format!("the block after {marker} is never closed by a ``` line"))?;
    Ok(start..end)
}

/// The docs' example WHICH.
fn doc_example(doc: &str, which: &str) -> String {
    let block = example_block(doc, which).unwrap_or_else(|e| panic!("docs/inject.md: {e}"));
    doc[block].to_owned()
}

/// `doc` with the text of its example WHICH replaced by `text`, and every
/// byte outside that block as it was.
fn with_doc_example(doc: &str, which: &str, text: &str) -> Result<String, String> {
    if !text.ends_with('\n') || text.lines().any(|l| l.trim_start().starts_with("```")) {
        return Err("the new example must end with a newline and hold no fence".into());
    }
    let block = example_block(doc, which)?;
    Ok(format!(
        "{}{text}{}",
        &doc[..block.start],
        &doc[block.end..]
    ))
}

/// With `KUBEXIT_UPDATE_GOLDEN=1`, the injected example is written into its
/// block of docs/inject.md, and nothing else of the page is touched.
#[test]
fn the_docs_example_injects_as_shown() {
    let path = root().join("docs/inject.md");
    let doc = fs::read_to_string(&path).unwrap();
    let out = ok(&["inject"], Some(&doc_example(&doc, "before")));
    let out = out.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    if std::env::var_os("KUBEXIT_UPDATE_GOLDEN").is_some() {
        let updated = with_doc_example(&doc, "after", &out)
            .unwrap_or_else(|e| panic!("docs/inject.md is not rewritten: {e}"));
        if updated != doc {
            fs::write(&path, &updated).unwrap();
        }
        assert_eq!(doc_example(&updated, "after"), out);
        return;
    }
    assert_eq!(
        out,
        doc_example(&doc, "after"),
        "docs/inject.md's example is stale (KUBEXIT_UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn rewriting_the_docs_example_changes_its_block_and_no_byte_besides() {
    let doc = fs::read_to_string(root().join("docs/inject.md")).unwrap();
    let block = example_block(&doc, "after").unwrap();
    // Words of the page (AFTER stood in a table the old rewrite broke) in
    // the new text must change nothing outside the block.
    let text = "kind: AFTER\nmetadata: {name: KUBEXIT_STOP_AFTER}\n";
    let rewritten = with_doc_example(&doc, "after", text).unwrap();
    assert_eq!(&rewritten[..block.start], &doc[..block.start]);
    assert_eq!(
        &rewritten[block.start + text.len()..],
        &doc[block.end..],
        "the page after the block changed"
    );
    assert_eq!(doc_example(&rewritten, "after"), text);
    assert_eq!(
        doc_example(&rewritten, "before"),
        doc_example(&doc, "before")
    );
    let back = with_doc_example(&rewritten, "after", &doc[block.clone()]).unwrap();
    assert!(
        back == doc,
        "writing the old example back does not give the page back"
    );
}

#[test]
fn the_docs_example_is_not_rewritten_without_exactly_one_marked_block() {
    let marker = "<!-- inject-example: after -->";
    let block = format!("{marker}\n```yaml\nkind: Job\n```\n");
    let refusal = |doc: &str| with_doc_example(doc, "after", "kind: Pod\n").unwrap_err();
    assert!(refusal("# A page\n").contains("0 times"));
    assert!(refusal(&format!("{block}\n{block}")).contains("2 times"));
    assert!(refusal(&format!("{marker}\nkind: Job\n")).contains("a ```yaml line"));
    assert!(refusal(&format!("Text {block}")).contains("a line of its own"));
    assert!(refusal(&format!("{marker}\n```yaml\nkind: Job\n")).contains("never closed"));
    assert!(
        with_doc_example(&block, "after", "a: 1\n```\n")
            .unwrap_err()
            .contains("no fence")
    );
    assert_eq!(
        with_doc_example(
            &format!("# A page\n\n{block}\nText.\n"),
            "after",
            "kind: Pod\n"
        )
        .unwrap(),
        format!("# A page\n\n{marker}\n```yaml\nkind: Pod\n```\n\nText.\n")
    );
}

/// Every `kubexit` command in the shell blocks of docs/inject.md and of the
/// README runs, in order, in a directory where `job.yaml` is the docs'
/// example; `kubectl` is not run, only the kubexit part of a pipeline
/// (fed the injected example when it reads a pipe).
#[test]
fn the_commands_in_the_docs_run() {
    let doc = fs::read_to_string(root().join("docs/inject.md")).unwrap();
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("job.yaml"), doc_example(&doc, "before")).unwrap();
    let injected = doc_example(&doc, "after");
    let bin = Path::new(env!("CARGO_BIN_EXE_kubexit"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for text in [&doc, &readme] {
        for block in text.split("```sh\n").skip(1) {
            let block = block.split("```").next().unwrap();
            for line in block.lines() {
                let segments: Vec<&str> = line.split('|').map(str::trim).collect();
                for (i, segment) in segments.iter().enumerate() {
                    if !(segment.starts_with("kubexit inject")
                        || segment.starts_with("kubexit uninject"))
                    {
                        continue;
                    }
                    let mut command = std::process::Command::new("sh");
                    command
                        .args(["-c", segment])
                        .current_dir(dir.path())
                        .env("PATH", &path)
                        .env_remove("KUBEXIT_NAME")
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    let mut child = command.spawn().unwrap();
                    let mut stdin = child.stdin.take().unwrap();
                    if i > 0 {
                        std::io::Write::write_all(&mut stdin, injected.as_bytes()).unwrap();
                    }
                    drop(stdin);
                    let out = child.wait_with_output().unwrap();
                    assert!(
                        out.status.success(),
                        "{line:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    ran += 1;
                }
            }
        }
    }
    assert!(ran >= 5, "only {ran} commands found in the docs");
}

#[test]
fn opting_out_of_an_injected_pod_takes_kubexit_out() {
    let plain = pod_with("{kubexit.io/skip: mesh}");
    let injected = ok(&["inject"], Some(&plain));
    let disabled = injected.replace("kubexit.io/skip: mesh", "kubexit.io/inject: disabled");
    let out = ok(&["inject"], Some(&disabled));
    assert_lacks(&out, "/kubexit/kubexit");
    assert_lacks(&out, "kubexit.io/injected");
}

#[test]
fn empty_annotations_are_read_as_none() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: n\n  annotations:\nspec:\n  containers: [{name: app, image: i, command: [a]}]\n";
    let out = ok(&["inject"], Some(pod));
    assert_contains(&out, "kubexit.io/injected");
}

/// Every container of every golden output runs with a configuration that
/// kubexit accepts: the variables inject writes are parsed by kubexit's own
/// configuration, as it would at start.
#[test]
fn kubexit_accepts_the_configuration_inject_writes() {
    use clap::{CommandFactory, Parser};
    use kubexit::config::{Args, Config, Environment};
    struct NoAliases;
    impl Environment for NoAliases {
        fn get(&self, _: &str) -> Option<std::ffi::OsString> {
            None
        }
    }
    let flag = |variable: &str| {
        variable
            .strip_prefix("KUBEXIT_")
            .unwrap()
            .to_ascii_lowercase()
            .replace('_', "-")
    };
    let known = |variable: &str| {
        let long = flag(variable);
        Args::command()
            .get_arguments()
            .any(|a| a.get_long() == Some(long.as_str()))
    };
    let mut checked = 0;
    for input in golden_inputs("inject") {
        let golden = injected_path(&input);
        let mut queue = documents(&fs::read_to_string(&golden).unwrap());
        while let Some(doc) = queue.pop() {
            if doc["kind"] == "List" {
                queue.extend(doc["items"].as_array().unwrap().iter().cloned());
                continue;
            }
            let spec = match doc["kind"].as_str().unwrap() {
                "Pod" => &doc["spec"],
                "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => &doc["spec"]["template"]["spec"],
            };
            for container in spec["containers"].as_array().into_iter().flatten() {
                let mut words = vec!["kubexit".to_owned()];
                for var in container["env"].as_array().into_iter().flatten() {
                    let name = var["name"].as_str().unwrap();
                    if !name.starts_with("KUBEXIT_") {
                        continue;
                    }
                    assert!(
                        known(name),
                        "inject writes {name}, which kubexit does not know"
                    );
                    words.push(format!("--{}", flag(name)));
                    words.push(var["value"].as_str().unwrap_or("from-elsewhere").to_owned());
                }
                if words.len() == 1 {
                    continue;
                }
                words.push("true".into());
                let origin = format!(
                    "{} {} container {}",
                    golden.display(),
                    doc["metadata"]["name"],
                    container["name"]
                );
                let args = Args::try_parse_from(&words)
                    .unwrap_or_else(|e| panic!("{origin}: {words:?}: {e}"));
                Config::from_args(args, &NoAliases)
                    .unwrap_or_else(|e| panic!("{origin}: kubexit refuses {words:?}: {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} containers checked");
}
