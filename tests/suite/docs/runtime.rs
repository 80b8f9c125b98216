//! Container runtimes and kubexit's command line: what a container runs,
//! from its image's `ENTRYPOINT` and `CMD` and the manifest's overrides,
//! and whether kubexit accepts that command line. kubexit's own images are
//! read from the Dockerfile; nothing is assumed of any other image.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use clap::error::ErrorKind;
use kubexit::config::{Args, Config, Environment};

use crate::util::files::root;

/// What a container runtime knows of an image before any override.
#[derive(Debug, Clone)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The programs in it, for kubexit's own images; `None` for any other
    /// image, of which nothing is assumed.
    pub programs: Option<Vec<&'static str>>,
}

/// The `ENTRYPOINT` and `CMD` of each stage of the Dockerfile, the
/// instructions in their JSON form.
pub fn dockerfile_stages() -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let text = fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut stages = BTreeMap::new();
    let mut stage = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("FROM") => {
                stage = match words.as_slice() {
                    [_, _, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => String::new(),
                };
                stages.insert(stage.clone(), (Vec::new(), Vec::new()));
            }
            Some(instruction @ ("ENTRYPOINT" | "CMD")) => {
                let json = line[instruction.len()..].trim();
                let argv: Vec<String> = serde_json::from_str(json).unwrap_or_else(|e| {
                    panic!("Dockerfile: {instruction} {json}: use the JSON form ({e})")
                });
                let entry = stages.get_mut(&stage).expect("an instruction before FROM");
                if instruction == "ENTRYPOINT" {
                    entry.0 = argv;
                } else {
                    entry.1 = argv;
                }
            }
            _ => {}
        }
    }
    stages
}

/// The image a manifest names. kubexit's own images (any registry, named
/// `kubexit`) are the Dockerfile's stages: a tag `scratch` (or ending in
/// `-scratch`) is the `scratch` stage, kubexit alone; any other tag the
/// `default` stage, busybox with kubexit. `tests/containers.rs` checks that
/// the images built by `scripts/` hold what is listed here.
pub fn image(name: &str) -> Image {
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repository, tag) = last.split_once(':').unwrap_or((last, "latest"));
    if repository != "kubexit" {
        return Image {
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            programs: None,
        };
    }
    let scratch = tag == "scratch" || tag.ends_with("-scratch");
    let stage = if scratch { "scratch" } else { "default" };
    let stages = dockerfile_stages();
    let (entrypoint, cmd) = stages
        .get(stage)
        .unwrap_or_else(|| panic!("Dockerfile: no stage {stage:?} for the image {name}"))
        .clone();
    let programs = if scratch {
        vec!["/bin/kubexit"]
    } else {
        vec!["/bin/kubexit", "cp", "/bin/cp", "sh", "/bin/sh"]
    };
    Image {
        entrypoint,
        cmd,
        programs: Some(programs),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Kubernetes,
    Compose,
}

impl Runtime {
    /// The keys that replace the image's `ENTRYPOINT` and its `CMD`.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            Runtime::Kubernetes => ("command", "args"),
            Runtime::Compose => ("entrypoint", "command"),
        }
    }
}

/// A container (or compose service) as its manifest describes it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub origin: String,
    pub runtime: Runtime,
    pub image: String,
    /// What replaces the `ENTRYPOINT` (Kubernetes `command`, compose
    /// `entrypoint`).
    pub entrypoint: Option<Vec<String>>,
    /// What replaces the `CMD` (Kubernetes `args`, compose `command`).
    pub cmd: Option<Vec<String>>,
    /// Its environment; values from the downward API are stand-ins.
    pub env: BTreeMap<String, String>,
    /// Where volumes are mounted in it.
    pub mounts: Vec<String>,
}

impl ContainerSpec {
    /// The command line the runtime runs: the overrides joined with the
    /// image's `ENTRYPOINT` and `CMD`, or `None` when that depends on an
    /// image of which nothing is known here.
    pub fn argv(&self, image: &Image) -> Option<Vec<String>> {
        if let Some(entrypoint) = &self.entrypoint {
            // Replacing the ENTRYPOINT drops the image's CMD, in both.
            let mut argv = entrypoint.clone();
            argv.extend(self.cmd.iter().flatten().cloned());
            return Some(argv);
        }
        image.programs.as_ref()?;
        let mut argv = image.entrypoint.clone();
        argv.extend(self.cmd.clone().unwrap_or_else(|| image.cmd.clone()));
        Some(argv)
    }

    pub fn mounted(&self, path: &Path) -> bool {
        self.mounts.iter().any(|m| path.starts_with(m))
    }
}

/// A kubexit that supervises a command, as found in a container.
pub struct Supervised {
    pub origin: String,
    pub config: Config,
    pub mounts: Vec<String>,
}

// ---------------------------------------------------------------------------
// kubexit command lines
// ---------------------------------------------------------------------------

pub struct NoAliases;

impl Environment for NoAliases {
    fn get(&self, _: &str) -> Option<std::ffi::OsString> {
        None
    }
}

/// What kubexit makes of a command line.
pub enum Accepted {
    Supervises(Box<Config>),
    Installs(PathBuf),
    /// `--status`, `--help`, `--version`: it prints and exits.
    Prints,
    /// Flags and arguments parse, but the line says too little to be run
    /// as it stands (a name given elsewhere in the text).
    Parses,
}

/// Parses `argv` (kubexit first) with the `KUBEXIT_*` variables of `env`,
/// as the binary would: each variable is given as its flag (`KUBEXIT_X_Y`
/// as `--x-y`, so an unknown variable fails as an unknown flag) unless the
/// line gives the flag itself. With `complete`, the line must be one that
/// kubexit runs; without, only its flags must parse.
pub fn accept(
    argv: &[String],
    env: &BTreeMap<String, String>,
    complete: bool,
) -> Result<Accepted, String> {
    let mut words = vec!["kubexit".to_owned()];
    for (key, value) in env {
        let Some(setting) = key.strip_prefix("KUBEXIT_") else {
            continue;
        };
        let flag = format!("--{}", setting.to_ascii_lowercase().replace('_', "-"));
        if !argv.contains(&flag) {
            words.push(flag);
            words.push(value.clone());
        }
    }
    words.extend(argv.iter().skip(1).cloned());
    let args = match Args::try_parse_from(&words) {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Accepted::Prints);
        }
        Err(e) => return Err(format!("kubexit refuses {words:?}: {}", e.kind())),
    };
    if let Some(dir) = &args.install {
        return Ok(Accepted::Installs(dir.clone()));
    }
    if args.status {
        return Ok(Accepted::Prints);
    }
    if !complete && args.name.is_none() {
        return Ok(Accepted::Parses);
    }
    Config::from_args(args, &NoAliases)
        .map(|c| Accepted::Supervises(Box::new(c)))
        .map_err(|e| format!("kubexit refuses {words:?}: {e}"))
}

pub fn is_kubexit(program: &str) -> bool {
    program.rsplit('/').next() == Some("kubexit")
}
