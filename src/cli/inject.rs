//! `kubexit inject` and `kubexit uninject` on the command line: arguments,
//! files and standard streams around the transformation.
//!
//! Every input is read and every object transformed before a byte is
//! written, so an error in the input leaves standard output empty: never
//! half an injection to pipe into `kubectl apply`. Only a failure to write
//! standard output itself (its reader gone, a full disk) can leave part of
//! it written; that is exit status 1. Each object's fate is said on
//! standard error (`Job migrate: injected into migrate, cloudsql-proxy`),
//! as `linkerd inject` does, so that standard output stays the manifest.
//!
//! Flags are annotations: `--sidecars proxy` sets `kubexit.io/sidecars:
//! proxy` on every pod before it is read (overriding the pod's own), and
//! the record of the injection keeps what they replaced, so `uninject`
//! gives back the manifest as it was. `--annotate KEY=VALUE` reaches every
//! other annotation of the vocabulary.
//!
//! **How the subcommand is reached.** Upstream's command line is
//! `kubexit CMD ARGS...` with the configuration in the environment, and
//! it keeps its meaning: [`subcommand`] takes `kubexit inject` (or
//! `uninject`) only when `KUBEXIT_NAME` is not in the environment. Upstream
//! could never run without `KUBEXIT_NAME`, and `--name` must come before
//! the command, so no command line that upstream ran changes meaning; a
//! supervised child named `inject` still works with `KUBEXIT_NAME` set or
//! `kubexit --name x inject`. The slim build, without the transformation,
//! says it is not there, exit 2.
//!
//! Exit status: 0 when every object was written; 2 for bad input (a usage
//! error, a file that cannot be read, invalid YAML or JSON, an annotation
//! or a pod that cannot be injected), with every error of the inputs said
//! (a bad flag is said alone, before any input is read); 1 when standard
//! output cannot be written.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::exit::{EXIT_CONFIG, EXIT_FAILURE};
use crate::inject::manifest::{self, Change, ManifestError};
use crate::inject::pod::{self, Options};
use crate::inject::vocabulary::{self, Install, PREFIX, Setting};

/// kubexit inject: add kubexit to the pods of Kubernetes manifests, as their
/// kubexit.io/ annotations say; kubexit uninject (or --uninject): take it out again.
#[derive(Parser, Debug)]
#[command(
    name = "kubexit inject",
    version,
    override_usage = "kubexit inject [OPTIONS] [FILE]...\n       kubexit uninject [FILE]...",
    after_help = "Reads YAML or JSON (several documents, List objects) and writes the objects, \
                  in order, to standard output; what happened to each is said on standard error. \
                  Pods and the pod templates of Jobs, CronJobs, Deployments, StatefulSets, \
                  DaemonSets, ReplicaSets and ReplicationControllers are injected; other objects \
                  pass through. The annotations are described in docs/inject.md. \
                  Exit status: 0 done; 2 bad input (nothing is written); 1 output failed.\n\n\
                  Example: kubexit inject job.yaml | kubectl apply -f -"
)]
pub struct InjectArgs {
    /// Manifests to read; standard input when none, or `-`
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// A manifest to read, as kubectl, istioctl and linkerd take it (`-f -` is standard
    /// input); repeatable, read after the FILEs
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<PathBuf>,

    /// What to write: yaml, or json (one object after another)
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "yaml",
          value_parser = ["yaml", "json"])]
    pub output: String,

    /// Take kubexit out of injected objects instead, giving them back as they were
    #[arg(long)]
    pub uninject: bool,

    /// Image of the init container that installs kubexit (kubexit.io/image)
    /// [default: this version's, ghcr.io/kubexit/kubexit:VERSION]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// How kubexit gets into the pod: that init container runs cp (the image has cp) or
    /// self (kubexit --install, for images without a shell); none: no init container, the
    /// containers' images carry kubexit on their PATH (kubexit.io/install) [default: cp]
    #[arg(long, value_name = "cp|self|none")]
    pub install: Option<String>,

    /// Containers stopped once every main container has ended (kubexit.io/sidecars)
    #[arg(long, value_name = "NAMES")]
    pub sidecars: Option<String>,

    /// Containers left as they are (kubexit.io/skip)
    #[arg(long, value_name = "NAMES")]
    pub skip: Option<String>,

    /// The image's ENTRYPOINT of a container without `command`, which kubexit then runs
    /// (kubexit.io/entrypoint.CONTAINER); repeatable
    #[arg(long, value_name = "CONTAINER=COMMAND")]
    pub entrypoint: Vec<String>,

    /// Any kubexit.io/ annotation, set on every pod (the prefix may be left out); repeatable
    #[arg(short = 'a', long, value_name = "KEY=VALUE")]
    pub annotate: Vec<String>,

    /// Ask no registry: a container without `command` then needs
    /// kubexit.io/entrypoint.CONTAINER (by default its image's ENTRYPOINT and CMD are read
    /// from the image's registry, with the credentials podman would use)
    #[arg(long)]
    pub offline: bool,

    /// The most the whole lookup of images may take, every registry together [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub registry_timeout: Option<std::time::Duration>,

    /// Registries (HOST[:PORT], comma-separated) spoken to over plain HTTP; every other is
    /// spoken to over TLS, against the system's CAs or SSL_CERT_FILE
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration above zero, such as 10s or 1m"))
}

impl InjectArgs {
    /// The annotations the flags set, keyed in full.
    fn overrides(&self) -> Result<BTreeMap<String, String>, String> {
        let mut overrides = BTreeMap::new();
        let mut set = |key: String, value: &str| {
            overrides.insert(key, value.to_owned());
        };
        for (setting, value) in [
            (Setting::Image, &self.image),
            (Setting::Install, &self.install),
            (Setting::Sidecars, &self.sidecars),
            (Setting::Skip, &self.skip),
        ] {
            if let Some(value) = value {
                set(setting.pod_key(), value);
            }
        }
        for pair in &self.entrypoint {
            let (container, command) = pair.split_once('=').ok_or_else(|| {
                format!("--entrypoint {pair:?}: write CONTAINER=COMMAND, such as app=/docker-entrypoint.sh")
            })?;
            set(Setting::Entrypoint.container_key(container.trim()), command);
        }
        for pair in &self.annotate {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("--annotate {pair:?}: write KEY=VALUE, such as kubexit.io/sidecars=proxy")
            })?;
            let key = key.trim();
            let key = if key.starts_with(PREFIX) {
                key.to_owned()
            } else {
                format!("{PREFIX}{key}")
            };
            set(key, value);
        }
        if overrides.contains_key(&Setting::Injected.pod_key()) {
            return Err(format!(
                "{} is kubexit's record of an injection; it cannot be set",
                Setting::Injected.pod_key()
            ));
        }
        // Checked once here rather than once per object.
        let read = vocabulary::read(&overrides).map_err(|e| e.to_string())?;
        if read.install() == Install::InImage && self.image.is_some() {
            return Err(
                "--image names the image of the init container that installs kubexit, and \
                 --install none adds none (the images carry kubexit); give one of them"
                    .into(),
            );
        }
        Ok(overrides)
    }
}

/// Runs `kubexit inject ARGS...` or `kubexit uninject ARGS...`; `args`
/// starts with the subcommand's name.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.collect();
    let uninject_command = args.first().is_some_and(|a| a == "uninject");
    if uninject_command {
        args.insert(1, "--uninject".into());
    }
    let parsed = match InjectArgs::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    let overrides = match parsed.overrides() {
        Ok(overrides) => overrides,
        Err(message) => return refuse(&[message]),
    };
    if parsed.uninject && !overrides.is_empty() {
        return refuse(&[
            "uninject takes no annotations or flags but -o: it restores what the record says"
                .into(),
        ]);
    }
    let options = Options {
        image: pod::default_image(),
        overrides,
        ..Options::default()
    };

    let named: Vec<PathBuf> = parsed
        .files
        .iter()
        .chain(&parsed.filenames)
        .cloned()
        .collect();
    let inputs: Vec<PathBuf> = if named.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        named
    };
    let mut errors = Vec::new();
    let mut read = Vec::new();
    for input in &inputs {
        let (origin, text) = match read_input(input) {
            Ok(read) => read,
            Err(message) => {
                errors.push(message);
                continue;
            }
        };
        match manifest::parse(&text, &origin) {
            Ok(documents) => read.push((origin, documents)),
            Err(err) => errors.push(err.to_string()),
        }
    }
    // The images of the containers without `command`, all read before
    // any pod is injected.
    let images = if parsed.uninject || parsed.offline || !errors.is_empty() {
        Images::offline()
    } else {
        match Images::read(
            &read,
            &options,
            parsed.registry_timeout,
            &parsed.insecure_registries,
        ) {
            Ok(images) => images,
            Err(message) => return refuse(&[message]),
        }
    };
    let mut output = Vec::new();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    for (origin, documents) in &read {
        for document in documents {
            match transform(
                document,
                origin,
                parsed.uninject,
                &options,
                &images,
                &mut changes,
                &mut warnings,
            ) {
                Ok(done) => output.push(done),
                Err(err) => errors.push(err.to_string()),
            }
        }
    }
    if !errors.is_empty() {
        return refuse(&errors);
    }

    let text = if parsed.output == "json" {
        manifest::to_json(&output)
    } else {
        match manifest::to_yaml(&output) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("Error: {err}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    };
    if let Err(err) = std::io::stdout().lock().write_all(text.as_bytes()) {
        eprintln!("Error: cannot write to standard output: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    // One list of warnings per pod template, in the order of the changes
    // that have one.
    let mut warned = warnings.into_iter();
    for change in &changes {
        eprintln!("{}", describe(change, parsed.uninject));
        if change.has_pod {
            for warning in warned.next().unwrap_or_default() {
                eprintln!("Warning: {}: {warning}", change.object);
            }
        }
    }
    ExitCode::SUCCESS
}

fn transform(
    document: &serde_json::Value,
    origin: &str,
    uninject: bool,
    options: &Options,
    images: &Images,
    changes: &mut Vec<Change>,
    warnings: &mut Vec<Vec<String>>,
) -> Result<serde_json::Value, ManifestError> {
    if uninject {
        manifest::transform(
            document,
            origin,
            &mut |template| {
                let containers = pod::injected_containers(template)?;
                let template = pod::uninject(template)?;
                warnings.push(Vec::new());
                Ok((template, containers))
            },
            changes,
        )
    } else {
        manifest::transform(
            document,
            origin,
            &mut |template| {
                let injection = pod::inject(template, &images.options_for(template, options))?;
                warnings.push(injection.warnings);
                Ok((injection.template, injection.containers))
            },
            changes,
        )
    }
}

/// What the registries said of the images of containers without
/// `command`; nothing when offline (or built without the registry client).
#[derive(Default)]
struct Images {
    #[cfg(feature = "registry")]
    lookups: Option<crate::inject::lookup::Lookups>,
}

impl Images {
    fn offline() -> Images {
        Images::default()
    }

    /// Reads the images every pod of `read` wants, at once, within the
    /// registry client's budget.
    #[cfg(feature = "registry")]
    fn read(
        read: &[(String, Vec<serde_json::Value>)],
        options: &Options,
        budget: Option<std::time::Duration>,
        insecure: &[String],
    ) -> Result<Images, String> {
        use crate::inject::lookup::Lookups;
        use crate::registry::{Keyring, Resolver, Settings};

        let mut wanted = Vec::new();
        for (origin, documents) in read {
            for document in documents {
                // A first pass that changes nothing: its errors are said
                // by the second.
                let _ = manifest::transform(
                    document,
                    origin,
                    &mut |template| {
                        wanted.extend(pod::wanted(template, options));
                        Ok((template.clone(), Vec::new()))
                    },
                    &mut Vec::new(),
                );
            }
        }
        if wanted.is_empty() {
            return Ok(Images::offline());
        }
        let keyring = Keyring::from_auth_files()
            .map_err(|e| format!("{e}; or give --offline and kubexit.io/entrypoint.NAME"))?;
        let budget = budget.unwrap_or(CLI_BUDGET);
        let settings = Settings {
            budget,
            per_call: CLI_PER_CALL.min(budget),
            insecure: insecure
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            ..Settings::default()
        };
        let resolver = Resolver::new(settings, keyring).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the registry client: {e}"))?;
        let lookups = runtime.block_on(Lookups::read(&resolver, &wanted, None));
        Ok(Images {
            lookups: Some(lookups),
        })
    }

    #[cfg(not(feature = "registry"))]
    fn read(
        _: &[(String, Vec<serde_json::Value>)],
        _: &Options,
        _: Option<std::time::Duration>,
        _: &[String],
    ) -> Result<Images, String> {
        Ok(Images::offline())
    }

    /// `options` with what the images of `template`'s containers run.
    fn options_for(&self, template: &serde_json::Value, options: &Options) -> Options {
        #[cfg(feature = "registry")]
        if let Some(lookups) = &self.lookups {
            let wanted = pod::wanted(template, options);
            if !wanted.is_empty() {
                return Options {
                    images: lookups.images(&wanted),
                    ..options.clone()
                };
            }
        }
        let _ = template;
        options.clone()
    }
}

/// The whole lookup's budget on the command line, where no API server
/// waits: room for a registry across the world and its token service.
#[cfg(feature = "registry")]
const CLI_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// One request's timeout on the command line.
#[cfg(feature = "registry")]
const CLI_PER_CALL: std::time::Duration = std::time::Duration::from_secs(5);

/// One line on what happened to an object.
fn describe(change: &Change, uninject: bool) -> String {
    let object = &change.object;
    match (change.has_pod, uninject, change.containers.is_empty()) {
        (false, _, _) => format!("{object}: passed through (no pod template)"),
        (true, true, false) => {
            format!("{object}: uninjected from {}", change.containers.join(", "))
        }
        (true, true, true) => format!("{object}: passed through (not injected)"),
        (true, false, false) => format!("{object}: injected into {}", change.containers.join(", ")),
        (true, false, true) => format!(
            "{object}: not injected (kubexit.io/inject: disabled, or every container skipped)"
        ),
    }
}

/// A file's text and its name for messages; `-` is standard input.
fn read_input(path: &PathBuf) -> Result<(String, String), String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        return std::io::stdin()
            .read_to_string(&mut text)
            .map(|_| ("standard input".to_owned(), text))
            .map_err(|e| format!("cannot read standard input: {e}"));
    }
    let origin = path.display().to_string();
    std::fs::read_to_string(path)
        .map(|text| (origin.clone(), text))
        .map_err(|e| format!("{origin}: cannot read: {e}"))
}

/// Says every error, writes nothing on standard output, exits 2.
fn refuse(errors: &[String]) -> ExitCode {
    for error in errors {
        eprintln!("Error: {error}");
    }
    ExitCode::from(EXIT_CONFIG)
}
