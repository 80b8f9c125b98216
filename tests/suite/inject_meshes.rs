//! `kubexit inject` after a mesh's injector, on the injectors' own golden
//! outputs (`tests/fixtures/meshes/`, from istio/istio and
//! linkerd/linkerd2): the mesh's containers are left exactly as they came,
//! the main containers wait for a regular proxy's readiness and ask it to
//! quit (the last one out, when there are several), a native proxy gets
//! nothing, annotations still win, and Linkerd's switched-off shutdown
//! endpoint is warned about. The real API server's verdict on these is in
//! `inject_kubernetes.rs`, a Job run on the real node in `cluster::meshes`.

use std::fs;
use std::path::PathBuf;

use kubexit::inject::manifest;
use serde_json::{Value, json};

use crate::util::{
    Finished, assert_contains, assert_lacks,
    files::{assert_golden, fixtures},
    kubexit_with_input,
};

const TEST_IMAGE: &str = "registry.example/kubexit:test";

/// The meshes' outputs, as their injectors wrote them.
pub fn mesh_outputs() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(fixtures("meshes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".kubexit.yaml") && !name.ends_with(".md")
        })
        .collect();
    found.sort();
    found
}

/// Where kubexit's injection of a mesh's output is kept.
fn golden_of(mesh_output: &std::path::Path) -> PathBuf {
    let name = mesh_output.file_name().unwrap().to_string_lossy();
    let stem = name.split('.').next().unwrap();
    fixtures("meshes").join(format!("{stem}.kubexit.yaml"))
}

fn run(args: &[&str], input: Option<&str>) -> Finished {
    kubexit_with_input(args, input)
}

fn ok(args: &[&str], input: Option<&str>) -> Finished {
    let done = run(args, input);
    assert_eq!(done.code(), 0, "kubexit {args:?} failed:\n{}", done.stderr);
    done
}

fn refused(input: &str) -> String {
    let done = run(&["inject", "-f", "-"], Some(input));
    assert_eq!(done.code(), 2, "expected a refusal:\n{}", done.stderr);
    assert_eq!(done.stdout, "");
    done.stderr
}

fn parse(text: &str) -> Value {
    manifest::parse(text, "test").unwrap().remove(0)
}

fn read(name: &str) -> Value {
    parse(&fs::read_to_string(fixtures("meshes").join(name)).unwrap())
}

/// The pod spec of a Pod or of a workload's template.
fn spec_of(object: &mut Value) -> &mut Value {
    if object["kind"] == "Pod" {
        &mut object["spec"]
    } else {
        &mut object["spec"]["template"]["spec"]
    }
}

fn inject(object: &Value) -> (Value, String) {
    let done = ok(
        &["inject", "-o", "json", "-f", "-"],
        Some(&object.to_string()),
    );
    (parse(&done.stdout), done.stderr)
}

fn container<'a>(object: &'a mut Value, name: &str) -> &'a Value {
    let spec = spec_of(object);
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The `KUBEXIT_` variables of one container, as `NAME=value`.
fn kubexit_env(object: &mut Value, name: &str) -> Vec<String> {
    container(object, name)["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let variable = e["name"].as_str()?;
            variable
                .starts_with("KUBEXIT_")
                .then(|| format!("{variable}={}", e["value"].as_str().unwrap_or_default()))
        })
        .collect()
}

#[test]
fn each_meshs_output_injects_to_its_golden_coordinated_pod() {
    let outputs = mesh_outputs();
    assert_eq!(outputs.len(), 4, "{outputs:?}");
    for output in outputs {
        // The pipeline's way: the mesh's output on standard input, -f -.
        let input = fs::read_to_string(&output).unwrap();
        let out = ok(&["inject", "--image", TEST_IMAGE, "-f", "-"], Some(&input)).stdout;
        assert_golden(&golden_of(&output), &out);
    }
}

#[test]
fn the_meshs_containers_come_through_exactly_as_its_injector_wrote_them() {
    let meshes: &[(&str, &[&str])] = &[
        ("istio-job.yaml.injected", &["istio-proxy", "istio-init"]),
        (
            "istio-job-native.yaml.injected",
            &["istio-proxy", "istio-init"],
        ),
        ("linkerd-pod.golden.yml", &["linkerd-proxy", "linkerd-init"]),
        (
            "linkerd-pod-native.golden.yml",
            &["linkerd-proxy", "linkerd-init"],
        ),
    ];
    for (file, theirs) in meshes {
        let mut before = read(file);
        let (mut after, stderr) = inject(&before);
        for name in *theirs {
            assert_eq!(
                container(&mut after, name),
                container(&mut before, name),
                "{file}: {name} was changed"
            );
        }
        // Only the main containers are named as injected.
        assert_lacks(&stderr, "proxy");
        let volumes = |object: &mut Value| spec_of(object)["volumes"].as_array().unwrap().clone();
        let kept = volumes(&mut before);
        assert!(
            volumes(&mut after).ends_with(&kept),
            "{file}: the mesh's volumes are not all kept"
        );
    }
}

#[test]
fn uninject_gives_the_meshs_output_back_exactly() {
    for output in mesh_outputs() {
        let original = manifest::parse(&fs::read_to_string(&output).unwrap(), "test").unwrap();
        let golden = golden_of(&output);
        let back = ok(&["uninject", golden.to_str().unwrap()], None).stdout;
        assert_eq!(
            back,
            manifest::to_yaml(&original).unwrap(),
            "{}",
            golden.display()
        );
    }
}

#[test]
fn injecting_a_mesh_pod_twice_changes_nothing() {
    for output in mesh_outputs() {
        let once = fs::read_to_string(golden_of(&output)).unwrap();
        let twice = ok(&["inject", "-f", "-"], Some(&once)).stdout;
        assert_eq!(twice, once, "{}", output.display());
    }
}

#[test]
fn beside_a_regular_proxy_the_main_waits_for_its_readiness_and_asks_it_to_quit() {
    let (mut istio, _) = inject(&read("istio-job.yaml.injected"));
    assert_eq!(
        kubexit_env(&mut istio, "pi"),
        [
            "KUBEXIT_NAME=pi",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_BIRTH_PROBES=http://127.0.0.1:15021/healthz/ready",
            "KUBEXIT_QUIT=istio",
        ]
    );
    // A Linkerd Job: its proxy's readiness and shutdown.
    let mut linkerd = read("linkerd-pod.golden.yml");
    spec_of(&mut linkerd)["restartPolicy"] = json!("Never");
    let (mut linkerd, _) = inject(&linkerd);
    assert_eq!(
        kubexit_env(&mut linkerd, "vote-bot"),
        [
            "KUBEXIT_NAME=vote-bot",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_BIRTH_PROBES=http://127.0.0.1:4191/ready",
            "KUBEXIT_QUIT=linkerd",
        ]
    );
}

#[test]
fn a_pod_that_does_not_complete_waits_for_the_proxy_but_never_quits_it() {
    // Linkerd's golden Pod has the default restartPolicy, Always: a main
    // that ends is started again and needs the proxy still.
    let (mut pod, _) = inject(&read("linkerd-pod.golden.yml"));
    assert_eq!(
        kubexit_env(&mut pod, "vote-bot"),
        [
            "KUBEXIT_NAME=vote-bot",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_BIRTH_PROBES=http://127.0.0.1:4191/ready",
        ]
    );
}

#[test]
fn beside_a_native_sidecar_proxy_nothing_is_added_for_it() {
    for (file, main) in [
        ("istio-job-native.yaml.injected", "pi"),
        ("linkerd-pod-native.golden.yml", "vote-bot"),
    ] {
        let (mut pod, stderr) = inject(&read(file));
        assert_eq!(
            kubexit_env(&mut pod, main),
            [
                format!("KUBEXIT_NAME={main}"),
                "KUBEXIT_GRAVEYARD=/graveyard".to_owned(),
            ],
            "{file}"
        );
        assert_lacks(&stderr, "Warning");
    }
}

/// The Istio Job with a second main container, `report`.
fn istio_two_mains() -> Value {
    let mut job = read("istio-job.yaml.injected");
    let containers = spec_of(&mut job)["containers"].as_array_mut().unwrap();
    containers.insert(
        1,
        json!({"name": "report", "image": "perl", "command": ["perl", "-e", "print 1"]}),
    );
    job
}

#[test]
fn several_mains_beside_one_proxy_leave_its_quit_to_the_last_one_out() {
    let (mut job, _) = inject(&istio_two_mains());
    for (main, other) in [("pi", "report"), ("report", "pi")] {
        let env = kubexit_env(&mut job, main);
        assert!(
            env.contains(&"KUBEXIT_QUIT=istio".to_owned())
                && env.contains(&format!("KUBEXIT_QUIT_AFTER={other}")),
            "{main}: {env:?}"
        );
    }
}

#[test]
fn a_pod_wide_quit_shared_by_several_mains_is_asked_by_the_last_one_out() {
    // No mesh: the pod-wide quit of a proxy skipped by hand, once refused.
    let mut job = istio_two_mains();
    job["spec"]["template"]["metadata"]["annotations"] = json!({
        "kubexit.io/quit": "envoy:15000",
        "kubexit.io/skip": "istio-proxy",
    });
    let (mut job, _) = inject(&job);
    assert_eq!(
        kubexit_env(&mut job, "pi"),
        [
            "KUBEXIT_NAME=pi",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_QUIT=envoy:15000",
            "KUBEXIT_QUIT_AFTER=report",
        ]
    );
    // A container's own quit is its own: no one else waited for.
    let mut job = istio_two_mains();
    let annotations = &mut job["spec"]["template"]["metadata"]["annotations"];
    annotations["kubexit.io/quit.report"] = json!("envoy:15000");
    let (mut job, _) = inject(&job);
    let report = kubexit_env(&mut job, "report");
    assert!(
        report.contains(&"KUBEXIT_QUIT=envoy:15000".to_owned()),
        "{report:?}"
    );
    assert!(
        !report.iter().any(|v| v.starts_with("KUBEXIT_QUIT_AFTER")),
        "{report:?}"
    );
    let pi = kubexit_env(&mut job, "pi");
    assert!(pi.contains(&"KUBEXIT_QUIT=istio".to_owned()), "{pi:?}");
    assert!(
        !pi.iter().any(|v| v.starts_with("KUBEXIT_QUIT_AFTER")),
        "{pi:?}"
    );
}

#[test]
fn explicit_annotations_win_over_the_meshs_defaults() {
    let mut job = read("istio-job.yaml.injected");
    let annotations = &mut job["spec"]["template"]["metadata"]["annotations"];
    annotations["kubexit.io/birth-probes"] = json!("tcp://127.0.0.1:15001");
    annotations["kubexit.io/quit.pi"] = json!("envoy:15000");
    annotations["kubexit.io/quit-timeout"] = json!("3s");
    let (mut job, _) = inject(&job);
    assert_eq!(
        kubexit_env(&mut job, "pi"),
        [
            "KUBEXIT_NAME=pi",
            "KUBEXIT_GRAVEYARD=/graveyard",
            "KUBEXIT_BIRTH_PROBES=tcp://127.0.0.1:15001",
            "KUBEXIT_QUIT=envoy:15000",
            "KUBEXIT_QUIT_TIMEOUT=3s",
        ]
    );
    // The old way still works: skipping the proxy by hand changes nothing.
    let mut job = read("istio-job.yaml.injected");
    job["spec"]["template"]["metadata"]["annotations"]["kubexit.io/skip"] = json!("istio-proxy");
    let (mut skipped, _) = inject(&job);
    let (mut untold, _) = inject(&read("istio-job.yaml.injected"));
    assert_eq!(
        kubexit_env(&mut skipped, "pi"),
        kubexit_env(&mut untold, "pi")
    );
}

#[test]
fn an_annotation_that_would_coordinate_a_meshs_container_is_refused() {
    for (key, value) in [
        ("kubexit.io/sidecars", "istio-proxy"),
        ("kubexit.io/grace-period.istio-proxy", "5s"),
        ("kubexit.io/birth-deps.pi", "istio-proxy"),
    ] {
        let mut job = read("istio-job.yaml.injected");
        job["spec"]["template"]["metadata"]["annotations"][key] = json!(value);
        let err = refused(&job.to_string());
        assert_contains(
            &err,
            &format!("annotation {key} names istio-proxy, which Istio's injector added"),
        );
        assert_contains(&err, "take istio-proxy out of");
    }
    let mut job = read("istio-job.yaml.injected");
    job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/status"] = json!("{");
    let err = refused(&job.to_string());
    assert_contains(&err, "annotation sidecar.istio.io/status is not the JSON");
}

#[test]
fn linkerds_proxy_without_its_shutdown_endpoint_is_warned_about() {
    let mut job = read("linkerd-pod.golden.yml");
    spec_of(&mut job)["restartPolicy"] = json!("Never");
    let (_, stderr) = inject(&job);
    assert_contains(
        &stderr,
        "Warning: Pod vote-bot: container linkerd-proxy: Linkerd's proxy serves its shutdown \
         endpoint only with LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true",
    );
    assert_contains(
        &stderr,
        "config.alpha.linkerd.io/proxy-enable-shutdown-endpoint: \"true\"",
    );
    assert_contains(&stderr, "native sidecar");
    // Switched on, nothing to say.
    let proxy = &mut spec_of(&mut job)["containers"][0];
    assert_eq!(proxy["name"], "linkerd-proxy");
    proxy["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "value": "true"}));
    let (_, stderr) = inject(&job);
    assert_lacks(&stderr, "Warning");
}
