//! Configuration: from the command line and environment to a [`Config`]
//! that the rest of kubexit can trust.
//!
//! Parsing happens in two stages, as in ripgrep. [`Args`] is the raw
//! surface: every upstream `KUBEXIT_*` variable, each also a flag given
//! before the command, parsed by clap with the variable shown in `--help`.
//! [`Config::from_args`] then validates everything at once and owns the
//! results: names that cannot escape the graveyard, dependency lists trimmed
//! and de-duplicated, Go durations, a known stop signal, the exit-code
//! policy. Nothing later re-checks or re-parses a setting.
//!
//! Upstream's command line keeps its meaning: `kubexit CMD ARGS...` with
//! configuration in the environment. Everything after the first word that is
//! not one of kubexit's flags belongs to the child, so `kubexit sh -c 'x'`
//! and `kubexit --name a -- grep --name x` both work. Aliases introduced by
//! forks of upstream are read too, below the official name in priority.
//!
//! Every error names the setting (variable and flag) and says how to fix it;
//! the caller turns it into exit status 2.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::duration::{self, GoDuration};
use crate::graveyard::name::Name;
use crate::process::signals::{SignalNumber, parse_signal};
use crate::quit::endpoint::Endpoint;
use crate::readiness::probe::Probe;

/// kubexit: run a command, record its life in a tombstone, and stop it when
/// the processes it depends on die.
#[derive(Parser, Debug, Default)]
#[command(
    name = "kubexit",
    version,
    override_usage = "kubexit [OPTIONS] [--] COMMAND [ARGS]...",
    after_help = "Each option can also be set by the environment variable shown beside it \
                  (the flag wins). Exit status: the child's; 128+N if it was killed by signal N; \
                  KUBEXIT_STOPPED_EXIT_CODE if kubexit stopped it because a death dependency died; \
                  2 for a configuration error; 127 command not found; 126 not executable; \
                  1 for any other failure of kubexit."
)]
pub struct Args {
    /// This process's name; its tombstone is GRAVEYARD/NAME [required]
    #[arg(long, env = "KUBEXIT_NAME", value_name = "NAME")]
    pub name: Option<OsString>,

    /// The directory shared by all kubexit instances of a pod, created if missing [default: /graveyard]
    #[arg(long, env = "KUBEXIT_GRAVEYARD", value_name = "DIR")]
    pub graveyard: Option<OsString>,

    /// Comma-separated names: when any of them dies, stop the child
    #[arg(long, env = "KUBEXIT_DEATH_DEPS", value_name = "NAMES")]
    pub death_deps: Option<OsString>,

    /// Stop the child when `any` death dependency has died, or once `all` of them have
    /// (a sidecar shared by several main containers) [default: any]
    #[arg(long, env = "KUBEXIT_DEATH_POLICY", value_name = "any|all")]
    pub death_policy: Option<OsString>,

    /// After the stop signal, how long before SIGKILL (Go duration: 30s, 1m30s, 500ms) [default: 30s]
    #[arg(long, env = "KUBEXIT_GRACE_PERIOD", value_name = "DURATION")]
    pub grace_period: Option<OsString>,

    /// Comma-separated names that must be ready before the child starts
    #[arg(long, env = "KUBEXIT_BIRTH_DEPS", value_name = "NAMES")]
    pub birth_deps: Option<OsString>,

    /// Comma-separated probes that must all succeed before the child starts: birth
    /// dependencies on an address (a sidecar nobody wraps), in the syntax of --ready-probe
    #[arg(long, env = "KUBEXIT_BIRTH_PROBES", value_name = "PROBES")]
    pub birth_probes: Option<OsString>,

    /// How long to wait for birth dependencies and birth probes [default: 30s]
    #[arg(long, env = "KUBEXIT_BIRTH_TIMEOUT", value_name = "DURATION")]
    pub birth_timeout: Option<OsString>,

    /// This pod's name (Kubernetes API mode for birth dependencies)
    #[arg(long, env = "KUBEXIT_POD_NAME", value_name = "POD")]
    pub pod_name: Option<OsString>,

    /// This pod's namespace (Kubernetes API mode) [default: the service account's namespace]
    #[arg(long, env = "KUBEXIT_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<OsString>,

    /// Where the pod's service account token, ca.crt and namespace are mounted (Kubernetes API mode)
    /// [default: /var/run/secrets/kubernetes.io/serviceaccount]
    #[arg(long, env = "KUBEXIT_SERVICE_ACCOUNT_DIR", value_name = "DIR")]
    pub service_account_dir: Option<PathBuf>,

    /// Signal that asks the child to stop (alias: KUBEXIT_STOPSIGNAL) [default: SIGTERM]
    #[arg(long, env = "KUBEXIT_STOP_SIGNAL", value_name = "SIGNAL")]
    pub stop_signal: Option<OsString>,

    /// Exit status when kubexit stopped the child because a death dependency died:
    /// a number 0-255, or `child` for the child's own status
    /// (alias: KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS=true|false) [default: 0]
    #[arg(long, env = "KUBEXIT_STOPPED_EXIT_CODE", value_name = "CODE|child")]
    pub stopped_exit_code: Option<OsString>,

    /// Once the child has ended: quit endpoints of sidecars nobody wraps, comma-separated,
    /// each called with a POST (GET:URL for a GET): URLs, or presets istio, linkerd,
    /// cloud-sql-proxy, envoy:PORT
    #[arg(long, env = "KUBEXIT_QUIT", value_name = "ENDPOINTS")]
    pub quit: Option<OsString>,

    /// How long the quit endpoints are tried [default: 10s]
    #[arg(long, env = "KUBEXIT_QUIT_TIMEOUT", value_name = "DURATION")]
    pub quit_timeout: Option<OsString>,

    /// Comma-separated names: a stop signal from outside is held until all of them have
    /// died (the pod is being deleted, and they drain through this sidecar)
    #[arg(long, env = "KUBEXIT_STOP_AFTER", value_name = "NAMES")]
    pub stop_after: Option<OsString>,

    /// How long a stop signal is held for the processes of --stop-after [default: 20s]
    #[arg(long, env = "KUBEXIT_STOP_AFTER_TIMEOUT", value_name = "DURATION")]
    pub stop_after_timeout: Option<OsString>,

    /// How to tell the child is ready: tcp://HOST:PORT, http(s)://HOST:PORT/PATH,
    /// exec:COMMAND ARGS, file:PATH or notify [default: ready when started]
    #[arg(long, env = "KUBEXIT_READY_PROBE", value_name = "PROBE")]
    pub ready_probe: Option<OsString>,

    /// How often the readiness probe is tried until it succeeds [default: 100ms]
    #[arg(long, env = "KUBEXIT_READY_PERIOD", value_name = "DURATION")]
    pub ready_period: Option<OsString>,

    /// How long one attempt of the readiness probe may take [default: 1s]
    #[arg(long, env = "KUBEXIT_READY_TIMEOUT", value_name = "DURATION")]
    pub ready_timeout: Option<OsString>,

    /// Log lines as `text` (upstream's wording) or `json` (one object per line) [default: text]
    #[arg(long, env = "KUBEXIT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<OsString>,

    /// The least important level logged: error, warn, info, debug or trace [default: info]
    #[arg(long, env = "KUBEXIT_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<OsString>,

    /// Start text log lines with a timestamp: true or false (alias: KUBEXIT_LOG_DATETIME) [default: false]
    #[arg(long, env = "KUBEXIT_LOG_TIMESTAMPS", value_name = "BOOL")]
    pub log_timestamps: Option<OsString>,

    /// Where to write one line saying why kubexit exited, for `kubectl describe pod`;
    /// `none` turns it off [default: /dev/termination-log, when it exists]
    #[arg(long, env = "KUBEXIT_TERMINATION_LOG", value_name = "PATH|none")]
    pub termination_log: Option<OsString>,

    /// Copy this kubexit binary into DIR (as DIR/kubexit) and exit: the init-container
    /// step for images without `cp`
    #[arg(long, value_name = "DIR", conflicts_with = "status")]
    pub install: Option<PathBuf>,

    /// Print every tombstone in the graveyard (name, state, times, exit code, why) and exit
    #[arg(long)]
    pub status: bool,

    /// With --status: print JSON instead of a table
    #[arg(long, requires = "status")]
    pub json: bool,

    /// The command to supervise, looked up on PATH, and its arguments
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// What kubexit's exit status is when it stopped the child because a death
/// dependency died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedExitCode {
    /// This fixed status (0 by default, so a Job whose sidecar was stopped
    /// on purpose succeeds).
    Code(u8),
    /// The child's own status, as if kubexit had not been there.
    Child,
}

/// When the child is stopped for its death dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeathPolicy {
    /// When any one of them has died (upstream's meaning).
    #[default]
    Any,
    /// Once every one of them has died.
    All,
}

/// How kubexit reports: its log lines and its termination message. Read
/// before everything else, so that even a configuration error is reported
/// the way the user asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub timestamps: bool,
    pub termination_log: TerminationLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the termination message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationLog {
    /// Kubernetes' default file, written only if it exists.
    Default,
    /// A path the user chose, created if need be.
    Path(PathBuf),
    Off,
}

const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

impl Default for Reporting {
    fn default() -> Reporting {
        Reporting {
            log_format: LogFormat::Text,
            log_level: tracing::Level::INFO,
            timestamps: false,
            termination_log: TerminationLog::Default,
        }
    }
}

impl Reporting {
    pub fn from_args(args: &Args, env: &dyn Environment) -> Result<Reporting, ConfigError> {
        const FORMAT: &str = "KUBEXIT_LOG_FORMAT (--log-format)";
        const LEVEL: &str = "KUBEXIT_LOG_LEVEL (--log-level)";
        const TIMESTAMPS: &str = "KUBEXIT_LOG_TIMESTAMPS (--log-timestamps)";
        let mut reporting = Reporting::default();
        if let Some(raw) = &args.log_format {
            reporting.log_format = match text(FORMAT, raw)?.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        FORMAT,
                        format!("{other:?} is neither text nor json"),
                    ));
                }
            };
        }
        if let Some(raw) = &args.log_level {
            let value = text(LEVEL, raw)?.trim();
            reporting.log_level = value.parse().map_err(|_| {
                invalid(
                    LEVEL,
                    format!("{value:?} is not one of error, warn, info, debug, trace"),
                )
            })?;
        }
        let timestamps = args
            .log_timestamps
            .clone()
            .or_else(|| env.get("KUBEXIT_LOG_DATETIME"));
        if let Some(raw) = timestamps {
            let value = text(TIMESTAMPS, &raw)?;
            reporting.timestamps = parse_go_bool(value).ok_or_else(|| {
                invalid(
                    TIMESTAMPS,
                    format!("{value:?} is not a boolean; write true or false"),
                )
            })?;
        }
        if let Some(raw) = &args.termination_log {
            reporting.termination_log = match raw.as_bytes() {
                b"" | b"none" => TerminationLog::Off,
                _ if raw == DEFAULT_TERMINATION_LOG => TerminationLog::Default,
                _ => TerminationLog::Path(PathBuf::from(raw)),
            };
        }
        Ok(reporting)
    }

    /// The termination message's file, if one should be written now.
    pub fn termination_path(&self) -> Option<PathBuf> {
        match &self.termination_log {
            TerminationLog::Off => None,
            TerminationLog::Default => {
                let path = PathBuf::from(DEFAULT_TERMINATION_LOG);
                path.exists().then_some(path)
            }
            TerminationLog::Path(path) => Some(path.clone()),
        }
    }
}

/// The graveyard of `--status`: the usual setting, or its default.
pub fn status_graveyard(args: &Args) -> Result<PathBuf, ConfigError> {
    graveyard_path(args.graveyard.as_deref())
}

/// The validated configuration: everything the supervisor needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: Name,
    pub graveyard: PathBuf,
    pub death_deps: Vec<Name>,
    pub death_policy: DeathPolicy,
    pub birth_deps: Vec<Name>,
    /// Birth dependencies on an address: probes that must all succeed.
    pub birth_probes: Vec<Probe>,
    pub birth_timeout: Duration,
    pub grace_period: Duration,
    /// Set when birth dependencies are containers of this pod, judged by
    /// the Kubernetes API (`KUBEXIT_POD_NAME` and birth dependencies set).
    pub pod: Option<PodTarget>,
    pub stop_signal: SignalNumber,
    pub stopped_exit_code: StoppedExitCode,
    pub ready_probe: Option<Probe>,
    pub ready_period: Duration,
    pub ready_timeout: Duration,
    pub quit: Vec<Endpoint>,
    pub quit_timeout: Duration,
    /// A stop signal from outside waits for these to die.
    pub stop_after: Vec<Name>,
    pub stop_after_timeout: Duration,
    pub command: Vec<OsString>,
}

/// The pod whose containers are the birth dependencies, and what the
/// environment says about reaching its API server. Whether that adds up to
/// a usable cluster is the kubernetes module's judgement, made when the
/// wait begins (not being in a cluster is exit status 1, not 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    /// `KUBEXIT_NAMESPACE`; else the service account's namespace file.
    pub namespace: Option<String>,
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, as the
    /// kubelet sets them in every container.
    pub service_host: Option<String>,
    pub service_port: Option<String>,
    pub service_account_dir: PathBuf,
}

/// Where Kubernetes mounts a pod's service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A setting that cannot be used, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no command given; usage: kubexit [OPTIONS] [--] COMMAND [ARGS]...")]
    NoCommand,
    #[error("KUBEXIT_NAME is not set; name this process with KUBEXIT_NAME=NAME or --name NAME")]
    NoName,
    #[error("{setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
}

/// The environment, as far as configuration is concerned. Tests substitute
/// a map; the program passes the process environment.
pub trait Environment {
    fn get(&self, key: &str) -> Option<OsString>;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn get(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }
}

const NAME: &str = "KUBEXIT_NAME (--name)";
const GRAVEYARD: &str = "KUBEXIT_GRAVEYARD (--graveyard)";
const DEATH_DEPS: &str = "KUBEXIT_DEATH_DEPS (--death-deps)";
const BIRTH_DEPS: &str = "KUBEXIT_BIRTH_DEPS (--birth-deps)";
const GRACE_PERIOD: &str = "KUBEXIT_GRACE_PERIOD (--grace-period)";
const BIRTH_TIMEOUT: &str = "KUBEXIT_BIRTH_TIMEOUT (--birth-timeout)";
const POD_NAME: &str = "KUBEXIT_POD_NAME (--pod-name)";
const NAMESPACE: &str = "KUBEXIT_NAMESPACE (--namespace)";
const STOP_SIGNAL: &str = "KUBEXIT_STOP_SIGNAL (--stop-signal)";
const STOPPED_EXIT_CODE: &str = "KUBEXIT_STOPPED_EXIT_CODE (--stopped-exit-code)";
const READY_PROBE: &str = "KUBEXIT_READY_PROBE (--ready-probe)";
const READY_PERIOD: &str = "KUBEXIT_READY_PERIOD (--ready-period)";
const READY_TIMEOUT: &str = "KUBEXIT_READY_TIMEOUT (--ready-timeout)";
const DEATH_POLICY: &str = "KUBEXIT_DEATH_POLICY (--death-policy)";
const BIRTH_PROBES: &str = "KUBEXIT_BIRTH_PROBES (--birth-probes)";
const QUIT: &str = "KUBEXIT_QUIT (--quit)";
const QUIT_TIMEOUT: &str = "KUBEXIT_QUIT_TIMEOUT (--quit-timeout)";
const STOP_AFTER: &str = "KUBEXIT_STOP_AFTER (--stop-after)";
const STOP_AFTER_TIMEOUT: &str = "KUBEXIT_STOP_AFTER_TIMEOUT (--stop-after-timeout)";

fn invalid(setting: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.to_string(),
    }
}

/// A value as text, or an error naming the setting.
fn text<'a>(setting: &'static str, raw: &'a OsStr) -> Result<&'a str, ConfigError> {
    raw.to_str().ok_or_else(|| {
        invalid(
            setting,
            format!("{:?} is not valid UTF-8", raw.to_string_lossy()),
        )
    })
}

impl Config {
    /// Validates `args`; `env` supplies the aliases that clap does not know.
    pub fn from_args(args: Args, env: &dyn Environment) -> Result<Config, ConfigError> {
        let name = match &args.name {
            None => return Err(ConfigError::NoName),
            Some(raw) => Name::from_os(raw).map_err(|e| invalid(NAME, e))?,
        };
        let graveyard = graveyard_path(args.graveyard.as_deref())?;
        let death_deps = dependency_list(DEATH_DEPS, args.death_deps.as_deref(), &name)?;
        let birth_deps = dependency_list(BIRTH_DEPS, args.birth_deps.as_deref(), &name)?;
        let grace_period = duration_setting(GRACE_PERIOD, args.grace_period.as_deref(), 30_000)?;
        let birth_timeout = duration_setting(BIRTH_TIMEOUT, args.birth_timeout.as_deref(), 30_000)?;
        let ready_period = duration_setting(READY_PERIOD, args.ready_period.as_deref(), 100)?;
        let ready_timeout = duration_setting(READY_TIMEOUT, args.ready_timeout.as_deref(), 1_000)?;
        if ready_period.is_zero() {
            return Err(invalid(READY_PERIOD, "must be more than 0, such as 100ms"));
        }
        let ready_probe = match args.ready_probe.as_deref() {
            None => None,
            Some(raw) => {
                Some(Probe::parse(text(READY_PROBE, raw)?).map_err(|e| invalid(READY_PROBE, e))?)
            }
        };
        let death_policy = match args.death_policy.as_deref() {
            None => DeathPolicy::Any,
            Some(raw) => DeathPolicy::parse(text(DEATH_POLICY, raw)?)
                .map_err(|e| invalid(DEATH_POLICY, e))?,
        };
        let birth_probes = match args.birth_probes.as_deref() {
            None => Vec::new(),
            Some(raw) => birth_probes(text(BIRTH_PROBES, raw)?)?,
        };
        let quit = match args.quit.as_deref() {
            None => Vec::new(),
            Some(raw) => Endpoint::parse_list(text(QUIT, raw)?).map_err(|e| invalid(QUIT, e))?,
        };
        let quit_timeout = duration_setting(QUIT_TIMEOUT, args.quit_timeout.as_deref(), 10_000)?;
        let stop_after = dependency_list(STOP_AFTER, args.stop_after.as_deref(), &name)?;
        let stop_after_timeout = duration_setting(
            STOP_AFTER_TIMEOUT,
            args.stop_after_timeout.as_deref(),
            20_000,
        )?;
        let pod_name = optional_text(POD_NAME, args.pod_name.as_deref())?;
        let namespace = optional_text(NAMESPACE, args.namespace.as_deref())?;

        let stop_signal = match args.stop_signal.or_else(|| env.get("KUBEXIT_STOPSIGNAL")) {
            None => SignalNumber::TERM,
            Some(raw) => {
                parse_signal(text(STOP_SIGNAL, &raw)?).map_err(|e| invalid(STOP_SIGNAL, e))?
            }
        };
        let stopped_exit_code = stopped_exit_code(args.stopped_exit_code.as_deref(), env)?;

        let pod = match pod_name {
            Some(name) if !birth_deps.is_empty() => {
                if !cfg!(feature = "kubernetes") {
                    return Err(invalid(
                        POD_NAME,
                        "Kubernetes API mode for birth dependencies is not in this build \
                         (the slim build, without the kubernetes feature); use the full build, \
                         or unset KUBEXIT_POD_NAME to wait for readiness declared in the graveyard",
                    ));
                }
                let service = |key: &str| {
                    env.get(key)
                        .and_then(|v| v.into_string().ok())
                        .filter(|v| !v.trim().is_empty())
                };
                Some(PodTarget {
                    name,
                    namespace,
                    service_host: service("KUBERNETES_SERVICE_HOST"),
                    service_port: service("KUBERNETES_SERVICE_PORT"),
                    service_account_dir: args
                        .service_account_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR)),
                })
            }
            _ => None,
        };
        if !cfg!(feature = "tls") {
            let tls = |probe: &Probe| matches!(probe, Probe::Http(target) if target.tls);
            let refuse = |setting| {
                Err(invalid(
                    setting,
                    "https needs kubexit built with the tls feature (the default build)",
                ))
            };
            if ready_probe.as_ref().is_some_and(tls) {
                return refuse(READY_PROBE);
            }
            if birth_probes.iter().any(tls) {
                return refuse(BIRTH_PROBES);
            }
            if quit.iter().any(|e| e.target.tls) {
                return refuse(QUIT);
            }
        }
        if args.command.is_empty() {
            return Err(ConfigError::NoCommand);
        }
        if args.command[0].is_empty() {
            return Err(invalid(
                "COMMAND",
                "the command is an empty string; give the program to run",
            ));
        }
        Ok(Config {
            name,
            graveyard,
            death_deps,
            death_policy,
            birth_deps,
            birth_probes,
            birth_timeout,
            grace_period,
            pod,
            stop_signal,
            stopped_exit_code,
            ready_probe,
            ready_period,
            ready_timeout,
            quit,
            quit_timeout,
            stop_after,
            stop_after_timeout,
            command: args.command,
        })
    }

    /// Where this process's tombstone lives.
    pub fn tombstone_path(&self) -> PathBuf {
        self.graveyard.join(self.name.as_str())
    }

    /// The start-up lines upstream prints, so logs stay familiar.
    pub fn log_summary(&self) {
        tracing::info!("Name: {}", self.name);
        tracing::info!("Graveyard: {}", self.graveyard.display());
        tracing::info!("Tombstone: {}", self.tombstone_path().display());
        tracing::info!("Birth Deps: {}", Name::display_list(&self.birth_deps));
        if let Some(pod) = &self.pod {
            tracing::info!(
                "Pod: {} (birth dependencies judged by the Kubernetes API)",
                pod.name
            );
        }
        tracing::info!("Death Deps: {}", Name::display_list(&self.death_deps));
        if self.death_policy == DeathPolicy::All && self.death_deps.len() > 1 {
            tracing::info!("Death Policy: all (stop once every death dependency has died)");
        }
        if !self.birth_probes.is_empty() {
            let probes: Vec<String> = self.birth_probes.iter().map(ToString::to_string).collect();
            tracing::info!("Birth Probes: {}", probes.join(","));
        }
        if !self.stop_after.is_empty() {
            tracing::info!(
                "Stop After: {} (at most {})",
                Name::display_list(&self.stop_after),
                GoDuration(self.stop_after_timeout)
            );
        }
        if !self.quit.is_empty() {
            let quit: Vec<String> = self.quit.iter().map(ToString::to_string).collect();
            tracing::info!("Quit: {}", quit.join(","));
        }
        tracing::info!("Birth Timeout: {}", GoDuration(self.birth_timeout));
        tracing::info!("Grace Period: {}", GoDuration(self.grace_period));
        if let Some(probe) = &self.ready_probe {
            tracing::info!("Ready Probe: {probe}");
        }
    }
}

/// `/graveyard` by default; trailing slashes dropped, as upstream. The root
/// directory and the empty string are refused: upstream silently turned
/// them into the current directory.
fn graveyard_path(raw: Option<&OsStr>) -> Result<PathBuf, ConfigError> {
    let Some(raw) = raw else {
        return Ok(PathBuf::from("/graveyard"));
    };
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Err(invalid(
            GRAVEYARD,
            "is empty; set it to the shared directory, such as /graveyard",
        ));
    }
    let mut end = bytes.len();
    while end > 1 && bytes[end - 1] == b'/' {
        end -= 1;
    }
    if &bytes[..end] == b"/" {
        return Err(invalid(
            GRAVEYARD,
            "must not be the root directory; use a directory of its own, such as /graveyard",
        ));
    }
    if bytes.contains(&0) {
        return Err(invalid(GRAVEYARD, "contains a NUL byte"));
    }
    // Only ASCII '/' bytes were cut, so the rest is the user's path as given.
    Ok(PathBuf::from(OsStr::from_bytes(&bytes[..end])))
}

fn dependency_list(
    setting: &'static str,
    raw: Option<&OsStr>,
    me: &Name,
) -> Result<Vec<Name>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let names = Name::parse_list(text(setting, raw)?).map_err(|e| invalid(setting, e))?;
    if names.contains(me) {
        return Err(invalid(
            setting,
            format!("{me:?} depends on itself; remove its own name from the list"),
        ));
    }
    Ok(names)
}

impl DeathPolicy {
    pub fn parse(raw: &str) -> Result<DeathPolicy, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(DeathPolicy::Any),
            "all" => Ok(DeathPolicy::All),
            other => Err(format!(
                "{other:?} is neither any (stop when one dies) nor all (once every one has died)"
            )),
        }
    }
}

/// Birth probes: comma-separated, in the syntax of the readiness probe; a
/// notify probe is the child's own word, so it cannot be one.
pub fn birth_probes(raw: &str) -> Result<Vec<Probe>, ConfigError> {
    let mut probes = Vec::new();
    for spec in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let probe = Probe::parse(spec).map_err(|e| invalid(BIRTH_PROBES, e))?;
        if probe == Probe::Notify {
            return Err(invalid(
                BIRTH_PROBES,
                "notify is the child's own word and cannot wait for another process; \
                 use tcp://, http://, https://, exec: or file:",
            ));
        }
        if !probes.contains(&probe) {
            probes.push(probe);
        }
    }
    Ok(probes)
}

fn duration_setting(
    setting: &'static str,
    raw: Option<&OsStr>,
    default_millis: u64,
) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(Duration::from_millis(default_millis)),
        Some(raw) => duration::parse(text(setting, raw)?).map_err(|e| invalid(setting, e)),
    }
}

fn optional_text(
    setting: &'static str,
    raw: Option<&OsStr>,
) -> Result<Option<String>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(raw) => {
            let value = text(setting, raw)?.trim();
            Ok((!value.is_empty()).then(|| value.to_owned()))
        }
    }
}

fn stopped_exit_code(
    raw: Option<&OsStr>,
    env: &dyn Environment,
) -> Result<StoppedExitCode, ConfigError> {
    if let Some(raw) = raw {
        let value = text(STOPPED_EXIT_CODE, raw)?.trim();
        if value.eq_ignore_ascii_case("child") {
            return Ok(StoppedExitCode::Child);
        }
        return value.parse::<u8>().map(StoppedExitCode::Code).map_err(|_| {
            invalid(
                STOPPED_EXIT_CODE,
                format!("{value:?} is neither a number from 0 to 255 nor \"child\""),
            )
        });
    }
    // Forks of upstream spelled the same policy as a boolean.
    for alias in [
        "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS",
        "KUBEXIT_SUPPRESS_STOPPED_EXITCODE",
    ] {
        if let Some(raw) = env.get(alias) {
            let value = raw.to_string_lossy();
            return match parse_go_bool(&value) {
                Some(true) => Ok(StoppedExitCode::Code(0)),
                Some(false) => Ok(StoppedExitCode::Child),
                None => Err(ConfigError::Invalid {
                    setting: if alias.starts_with("KUBEXIT_IGNORE") {
                        "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS"
                    } else {
                        "KUBEXIT_SUPPRESS_STOPPED_EXITCODE"
                    },
                    problem: format!("{value:?} is not a boolean; write true or false"),
                }),
            };
        }
    }
    Ok(StoppedExitCode::Code(0))
}

/// Go's strconv.ParseBool, which the forks used.
pub fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Environment for FakeEnv {
        fn get(&self, key: &str) -> Option<OsString> {
            self.0.get(key).map(OsString::from)
        }
    }

    fn args(name: &str, command: &[&str]) -> Args {
        Args {
            name: Some(name.into()),
            command: command.iter().map(OsString::from).collect(),
            ..Args::default()
        }
    }

    fn config(args: Args) -> Result<Config, ConfigError> {
        Config::from_args(args, &FakeEnv(HashMap::new()))
    }

    #[test]
    fn defaults_match_upstream() {
        let config = config(args("app", &["sleep", "1"])).unwrap();
        assert_eq!(config.graveyard, PathBuf::from("/graveyard"));
        assert_eq!(config.grace_period, Duration::from_secs(30));
        assert_eq!(config.birth_timeout, Duration::from_secs(30));
        assert_eq!(config.stop_signal, SignalNumber::TERM);
        assert_eq!(config.stopped_exit_code, StoppedExitCode::Code(0));
        assert!(config.death_deps.is_empty() && config.birth_deps.is_empty());
    }

    #[test]
    fn graveyard_trailing_slashes_are_dropped_and_root_is_refused() {
        let mut a = args("app", &["true"]);
        a.graveyard = Some("/lifecycle//".into());
        assert_eq!(config(a).unwrap().graveyard, PathBuf::from("/lifecycle"));
        for bad in ["/", "//", ""] {
            let mut a = args("app", &["true"]);
            a.graveyard = Some(bad.into());
            assert!(
                matches!(
                    config(a),
                    Err(ConfigError::Invalid {
                        setting: GRAVEYARD,
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_process_may_not_depend_on_itself() {
        let mut a = args("app", &["true"]);
        a.death_deps = Some("db, app".into());
        let err = config(a).unwrap_err().to_string();
        assert!(err.contains("depends on itself"), "{err}");
    }

    #[test]
    fn stopped_exit_code_accepts_numbers_child_and_the_fork_aliases() {
        let mut a = args("app", &["true"]);
        a.stopped_exit_code = Some("child".into());
        assert_eq!(config(a).unwrap().stopped_exit_code, StoppedExitCode::Child);

        let env = FakeEnv(HashMap::from([(
            "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS",
            "false",
        )]));
        let parsed = Config::from_args(args("app", &["true"]), &env).unwrap();
        assert_eq!(parsed.stopped_exit_code, StoppedExitCode::Child);

        let env = FakeEnv(HashMap::from([(
            "KUBEXIT_SUPPRESS_STOPPED_EXITCODE",
            "maybe",
        )]));
        assert!(Config::from_args(args("app", &["true"]), &env).is_err());

        let mut a = args("app", &["true"]);
        a.stopped_exit_code = Some("256".into());
        assert!(config(a).is_err());
    }

    #[test]
    fn the_stopsignal_alias_is_read_below_the_official_name() {
        let env = FakeEnv(HashMap::from([("KUBEXIT_STOPSIGNAL", "SIGINT")]));
        let parsed = Config::from_args(args("app", &["true"]), &env).unwrap();
        assert_eq!(parsed.stop_signal, SignalNumber(nix::libc::SIGINT));

        let mut a = args("app", &["true"]);
        a.stop_signal = Some("QUIT".into());
        let parsed = Config::from_args(a, &env).unwrap();
        assert_eq!(parsed.stop_signal, SignalNumber(nix::libc::SIGQUIT));
    }

    #[test]
    fn flags_come_before_the_command_and_the_rest_belongs_to_the_child() {
        let parsed =
            Args::try_parse_from(["kubexit", "--name", "a", "grep", "--name", "-v", "x"]).unwrap();
        assert_eq!(parsed.name, Some("a".into()));
        assert_eq!(parsed.command, ["grep", "--name", "-v", "x"]);

        let parsed = Args::try_parse_from(["kubexit", "--", "--weird", "-c"]).unwrap();
        assert_eq!(parsed.command, ["--weird", "-c"]);
    }
}
