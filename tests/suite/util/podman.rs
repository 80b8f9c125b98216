//! podman for the tests: a private configuration and image store, the
//! images built once per run, and names that never meet another run's.
//!
//! Nothing of the machine's is changed. `containers.conf`,
//! `storage.conf` and `registries.conf` are written under the target
//! directory and selected with `CONTAINERS_CONF`,
//! `CONTAINERS_STORAGE_CONF` and `CONTAINERS_REGISTRIES_CONF`:
//! - the default ulimits are the hard limits this process holds (podman's
//!   own defaults ask for more, and raising a hard limit needs
//!   CAP_SYS_RESOURCE, which a sandbox may lack), `nproc` no higher than
//!   `kernel.pid_max`;
//! - runc, not crun (crun 1.8 refuses a hybrid cgroup layout), cgroupfs
//!   and a file events log (no systemd needed), and netavark, whose DNS
//!   lets compose services find each other by name;
//! - the images live in `target/containers/storage` and networks in
//!   `target/containers/networks`, so the stand-ins, tagged with the names
//!   of real images, and the networks podman-compose makes are seen by
//!   these tests only;
//! - short names resolve to docker.io without asking.
//!
//! The images: kubexit's, built by `scripts/build-images.sh` from the
//! static binaries of `scripts/build-static.sh` (arm64 too when it has
//! been built), and also tagged with the
//! names the examples use (`ghcr.io/kubexit/kubexit:latest` and
//! `:scratch`); and the stand-ins of `stand-ins.sh`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::files::{root, target_dir};

/// A podman set up for the tests.
pub struct Podman {
    env: Vec<(&'static str, PathBuf)>,
}

/// The hard limit of `resource` (as /proc/self/limits names it).
fn hard_limit(resource: &str) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(resource))?;
    let rest = &line[resource.len()..];
    let hard = rest.split_whitespace().nth(1)?;
    if hard == "unlimited" {
        return Some(u64::MAX);
    }
    hard.parse().ok()
}

fn missing_tools() -> Vec<&'static str> {
    ["podman", "buildah", "runc", "busybox"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

fn setup() -> Result<Podman, String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(format!(
            "{missing:?} missing: apt-get install podman runc catatonit buildah busybox-static (.ci/run does)"
        ));
    }
    if !Path::new("/usr/libexec/podman/catatonit").exists()
        && !Path::new("/usr/bin/catatonit").exists()
    {
        return Err("catatonit missing (pods need it): apt-get install catatonit".into());
    }
    let binary = target_dir().join("static/kubexit");
    if !binary.exists() {
        return Err(format!(
            "{} missing: build it with scripts/build-static.sh (.ci/run does)",
            binary.display()
        ));
    }
    let dir = target_dir().join("containers");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let nofile = hard_limit("Max open files").unwrap_or(1024).min(1 << 20);
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let nproc = hard_limit("Max processes").unwrap_or(pid_max).min(pid_max);
    // The run directory holds sockets, whose paths must stay short.
    let tag: u32 = dir
        .to_string_lossy()
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let run = PathBuf::from(format!("/run/kubexit-tests-{tag:08x}"));
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             tmp_dir = \"{}\"\n[network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = \"{}\"\n",
            run.join("libpod").display(),
            dir.join("networks").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let storage = dir.join("storage.conf");
    fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("storage").display(),
            run.join("storage").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let registries = dir.join("registries.conf");
    fs::write(
        &registries,
        "unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n",
    )
    .map_err(|e| e.to_string())?;
    let podman = Podman {
        env: vec![
            ("CONTAINERS_CONF", conf),
            ("CONTAINERS_STORAGE_CONF", storage),
            ("CONTAINERS_REGISTRIES_CONF", registries),
        ],
    };
    // With the arm64 build at hand (as in CI), its images too, and the
    // indexes over both.
    let arches = if target_dir().join("static/arm64/kubexit").exists() {
        "amd64,arm64"
    } else {
        "amd64"
    };
    podman.script(&root().join("scripts/build-images.sh"), &["--arch", arches])?;
    for (built, named) in [
        ("localhost/kubexit:latest", "ghcr.io/kubexit/kubexit:latest"),
        (
            "localhost/kubexit:scratch",
            "ghcr.io/kubexit/kubexit:scratch",
        ),
    ] {
        podman.try_run(&["tag", built, named])?;
    }
    podman.script(&root().join("tests/suite/containers/stand-ins.sh"), &[])?;
    Ok(podman)
}

/// The podman of this run, set up on first use; `Err` says what is
/// missing.
pub fn podman() -> Result<&'static Podman, String> {
    static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
    PODMAN.get_or_init(setup).as_ref().map_err(Clone::clone)
}

/// A name no other test, and no other run, uses: `kx-PID-N-what`.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "kx-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Podman {
    /// A command with this podman's settings in its environment.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null());
        command
    }

    fn script(&self, path: &Path, args: &[&str]) -> Result<(), String> {
        let output = self
            .command("bash")
            .arg(path)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "{} failed: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.output(args);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(format!(
                "podman {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command("podman")
            .args(args)
            .output()
            .expect("run podman")
    }

    /// Runs podman; panics with its error output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a buildah (or other) command with these settings.
    pub fn tool(&self, program: &str, args: &[&str]) -> String {
        let output = self.command(program).args(args).output().expect("run tool");
        assert!(
            output.status.success(),
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A container's state: `running`, `exited`...
    pub fn state(&self, container: &str) -> String {
        self.run(&["inspect", "--format", "{{.State.Status}}", container])
    }

    pub fn exit_code(&self, container: &str) -> i32 {
        self.run(&["inspect", "--format", "{{.State.ExitCode}}", container])
            .parse()
            .expect("exit code")
    }

    pub fn logs(&self, container: &str) -> String {
        let output = self.output(&["logs", container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Waits until every container named has exited; panics with their
    /// logs at the deadline.
    pub fn wait_exited(&self, containers: &[&str], deadline: Duration) {
        let start = Instant::now();
        loop {
            if containers.iter().all(|c| self.state(c) == "exited") {
                return;
            }
            if start.elapsed() > deadline {
                let logs: Vec<String> = containers
                    .iter()
                    .map(|c| format!("--- {c} ({}):\n{}", self.state(c), self.logs(c)))
                    .collect();
                panic!(
                    "containers still running after {deadline:?}:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where a named volume's files are on this host.
    pub fn volume_path(&self, volume: &str) -> PathBuf {
        PathBuf::from(self.run(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume]))
    }
}

/// Removes what a test made (pods with their containers, volumes) when
/// it ends, passed or failed.
pub struct Cleanup<'a> {
    podman: &'a Podman,
    pods: Vec<String>,
    volumes: Vec<String>,
}

impl<'a> Cleanup<'a> {
    pub fn new(podman: &'a Podman) -> Cleanup<'a> {
        Cleanup {
            podman,
            pods: Vec::new(),
            volumes: Vec::new(),
        }
    }

    pub fn pod(&mut self, name: &str) -> &mut Self {
        self.pods.push(name.to_owned());
        self
    }

    pub fn volume(&mut self, name: &str) -> &mut Self {
        self.volumes.push(name.to_owned());
        self
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for pod in &self.pods {
            self.podman
                .output(&["pod", "rm", "--force", "--time", "0", pod]);
        }
        for volume in &self.volumes {
            self.podman.output(&["volume", "rm", "--force", volume]);
        }
    }
}
