//! The examples as podman runs them: a Job's pod template with
//! `podman kube play`, a compose file with podman-compose. Each adaptation
//! that podman needs is made here, in one place, with the reason beside it;
//! docs/containers.md says the same to users.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::files::root;
use crate::util::podman::{Cleanup, Podman, unique};

const DEADLINE: Duration = Duration::from_secs(180);

/// A Job's pod, played and finished.
pub struct Played<'a> {
    pub pod: String,
    /// The host directory of the volume mounted as the graveyard.
    pub graveyard: PathBuf,
    _cleanup: Cleanup<'a>,
}

/// Renames the volume `from` to `to` in a pod spec, where declared and
/// wherever mounted.
fn rename_volume(spec: &mut Value, from: &str, to: &str) {
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if volume["name"] == from {
            volume["name"] = json!(to);
        }
    }
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            for mount in container["volumeMounts"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if mount["name"] == from {
                    mount["name"] = json!(to);
                }
            }
        }
    }
}

/// Plays the Job of `examples/FILE` and waits until its containers have
/// exited.
pub fn play_job<'a>(podman: &'a Podman, file: &str) -> Played<'a> {
    let text = fs::read_to_string(root().join("examples").join(file)).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let job = docs
        .into_iter()
        .find(|d| d["kind"] == "Job")
        .unwrap_or_else(|| panic!("{file}: no Job"));
    let pod = unique(file.trim_end_matches(".yaml"));
    let mut cleanup = Cleanup::new(podman);
    cleanup.pod(&pod);

    // Adaptation 1: podman 4.3 plays Pods, not Jobs, so the Job's pod
    // template is played as a Pod (restartPolicy Never, as in the Job).
    let mut spec = job["spec"]["template"]["spec"].clone();

    let volumes: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    for volume in &volumes {
        // Adaptation 2: podman makes each emptyDir a named volume, named
        // after the volume and shared by every pod that names it, so each
        // run gets names of its own.
        let renamed = format!("{pod}-{volume}");
        rename_volume(&mut spec, volume, &renamed);
        cleanup.volume(&renamed);
    }
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        // Adaptation 3: podman 4.3's kube play crashes on a secret volume
        // (a nil dereference in VolumeFromSecret), so a secret becomes an
        // emptyDir; the stand-in proxy reads no credentials.
        if let Some(object) = volume.as_object_mut()
            && object.remove("secret").is_some()
        {
            object.insert("emptyDir".into(), json!({}));
        }
    }
    for container in spec["containers"].as_array_mut().into_iter().flatten() {
        // Adaptation 5: `ports` go. They only name a port for the cluster;
        // podman would publish them on the host, which the pod's
        // loopback-only network (below) refuses. The containers of a pod
        // reach each other through localhost either way.
        if let Some(object) = container.as_object_mut() {
            object.remove("ports");
        }
        // Adaptation 4: a main container that sleeps a minute to stand for
        // work sleeps a second: the test has nothing to learn from waiting.
        if let Some(command) = container["command"].as_array_mut()
            && let Some(at) = command.iter().position(|w| w == "sleep")
            && command.get(at + 1) == Some(&json!("60"))
        {
            command[at + 1] = json!("1");
        }
    }
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod},
        "spec": spec,
    });
    let path = std::env::temp_dir().join(format!("{pod}.yaml"));
    // JSON is YAML.
    fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    // Loopback only: the containers of a pod talk through localhost, and
    // nothing else on this machine is reached or disturbed.
    let played = podman.try_run(&["kube", "play", "--network", "none", path.to_str().unwrap()]);
    let _ = fs::remove_file(&path);
    if let Err(e) = played {
        panic!("{file}: {e}");
    }

    let containers: Vec<String> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{pod}-{}", c["name"].as_str().unwrap()))
        .collect();
    let names: Vec<&str> = containers.iter().map(String::as_str).collect();
    podman.wait_exited(&names, DEADLINE);
    let graveyard = podman.volume_path(&format!("{pod}-graveyard"));
    Played {
        pod,
        graveyard,
        _cleanup: cleanup,
    }
}

pub fn podman_compose_available() -> Result<(), String> {
    match std::process::Command::new("podman-compose")
        .arg("version")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("podman-compose missing: apt-get install podman-compose (.ci/run does)".into()),
    }
}

/// A compose project that ran to its end.
pub struct ComposeRun<'a> {
    /// podman-compose's exit status.
    pub status: i32,
    /// Everything it printed, the services' logs included.
    pub output: String,
    pub exit_codes: BTreeMap<String, i32>,
    pub graveyard: PathBuf,
    _down: ComposeDown<'a>,
}

struct ComposeDown<'a> {
    podman: &'a Podman,
    project: String,
    file: PathBuf,
}

impl Drop for ComposeDown<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .command("podman-compose")
            .args(["-p", &self.project, "-f"])
            .arg(&self.file)
            .args(["down", "-v"])
            .output();
        self.podman.output(&[
            "network",
            "rm",
            "--force",
            &format!("{}_default", self.project),
        ]);
    }
}

/// Runs `podman-compose up --exit-code-from SERVICE` on a compose file of
/// the repository.
pub fn compose_up<'a>(podman: &'a Podman, file: &str, exit_from: &str) -> ComposeRun<'a> {
    // podman-compose 1.0.3 ignores the file's `name:`; the project name
    // is given, and unique to this run.
    let project = unique("compose").replace('-', "");
    let path = root().join(file);
    let down = ComposeDown {
        podman,
        project: project.clone(),
        file: path.clone(),
    };
    let compose = |args: &[&str]| {
        let output = podman
            .command("timeout")
            .arg(DEADLINE.as_secs().to_string())
            .args(["podman-compose", "-p", &project, "-f"])
            .arg(&path)
            .args(args)
            .output()
            .expect("run podman-compose");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    };
    // Adaptation: podman-compose 1.0.3 ignores `condition:
    // service_completed_successfully` and starts every service at once,
    // so the one-shot installer is run to its end first; then the whole
    // file, as docker compose would run it.
    let (installed, install_output) = compose(&["up", "kubexit"]);
    assert_eq!(installed, 0, "installing kubexit:\n{install_output}");
    let (status, output) = compose(&["up", "--exit-code-from", exit_from]);

    let listed = podman.run(&[
        "ps",
        "--all",
        "--filter",
        &format!("label=io.podman.compose.project={project}"),
        "--format",
        "{{.Names}} {{.ExitCode}}",
    ]);
    let exit_codes = listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, code)| {
            let service = name
                .strip_prefix(&format!("{project}_"))
                .and_then(|s| s.strip_suffix("_1"))
                .unwrap_or(name);
            (service.to_owned(), code.parse().unwrap_or(-1))
        })
        .collect();
    let graveyard = podman.volume_path(&format!("{project}_graveyard"));
    ComposeRun {
        status,
        output,
        exit_codes,
        graveyard,
        _down: down,
    }
}
