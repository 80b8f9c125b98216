//! Configuration: from the command line and environment to a [`Config`]
//! that the rest of kubexit can trust.
//!
//! Parsing happens in two stages, as in ripgrep. [`Args`] is the raw
//! surface: every upstream `KUBEXIT_*` variable, each also a flag given
//! before the command, collected by clap as text with the variable shown in
//! `--help`. Each setting is declared once, as a row of the [`spec`]: its
//! flag, variable, default, aliases, parser and help, from which come the
//! clap field, the default applied, the label its errors name it by, and
//! what `--help` and the test of `docs/configuration.md` show.
//! [`Config::from_args`] then reads every setting through its parser, checks
//! what concerns several at once (a process may not depend on itself, API
//! mode and https need their cargo features, a command must be given), and
//! owns the results: names that cannot escape the graveyard, dependency
//! lists trimmed and de-duplicated, Go durations, a known stop signal, the
//! exit-code policy. No later module parses a setting again; one judgement
//! is left to the kubernetes module, which alone can make it: whether the
//! [`PodTarget`]'s service host, port and account add up to a client.
//!
//! Upstream's command line keeps its meaning: `kubexit CMD ARGS...` with
//! configuration in the environment. Everything after the first word that is
//! not one of kubexit's flags belongs to the child, so `kubexit sh -c 'x'`
//! and `kubexit --name a -- grep --name x` both work. Aliases introduced by
//! forks of upstream are read too, below the official name in priority.
//!
//! Every error about a value names the setting by its label,
//! `KUBEXIT_X (--x)` (or the fork's alias that was set, or `COMMAND`), and
//! what is wrong with it, most with what to write instead; the two about
//! what is missing say how to give it (the name, the command). The command
//! line turns each into exit status 2. The log's settings ([`reporting`])
//! are read first, so that the others' errors are said in the log the user
//! asked for. Usage errors are clap's own and come before all this (see
//! [`reporting`]).

mod args;
pub(crate) mod parse;
pub mod reporting;
pub mod spec;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use args::*;
pub use parse::parse_go_bool;
pub use reporting::{Log, LogFlags, LogFormat, Reporting, TerminationLog};

use crate::duration::GoDuration;
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;
use crate::process::signals::SignalNumber;
use crate::quit::endpoint::Endpoint;
use crate::readiness::probe::Probe;

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

/// The validated configuration: everything the supervisor needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: Name,
    pub graveyard: PathBuf,
    pub death_deps: Vec<Name>,
    pub death_policy: DeathPolicy,
    /// Which deaths the kubelet answers with a restart in place.
    pub restart_policy: RestartPolicy,
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
    /// The other main containers that share the sidecars of `quit`.
    pub quit_after: Vec<Name>,
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
    /// The webhook's own flags word their errors about the value so.
    #[error("{setting} {value:?}: {why}")]
    InvalidValue {
        setting: &'static str,
        value: String,
        why: String,
    },
    #[error("{setting} is required")]
    Required { setting: &'static str },
}

/// The environment, as far as configuration is concerned: where the
/// aliases are read (clap reads the official variables itself). Tests
/// substitute a map; the program passes the process environment.
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

fn invalid(setting: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.to_string(),
    }
}

impl Config {
    /// Reads and validates `args`; `env` supplies the aliases that clap
    /// does not know.
    pub fn from_args(args: Args, env: &dyn Environment) -> Result<Config, ConfigError> {
        let name = match args.name(env) {
            Err(ConfigError::Required { .. }) => return Err(ConfigError::NoName),
            read => read?,
        };
        let graveyard = args.graveyard(env)?;
        let death_deps = dependencies(DEATH_DEPS.label(), args.death_deps(env)?, &name)?;
        let birth_deps = dependencies(BIRTH_DEPS.label(), args.birth_deps(env)?, &name)?;
        let grace_period = args.grace_period(env)?;
        let birth_timeout = args.birth_timeout(env)?;
        let ready_period = args.ready_period(env)?;
        let ready_timeout = args.ready_timeout(env)?;
        let ready_probe = args.ready_probe(env)?;
        let death_policy = args.death_policy(env)?;
        let restart_policy = args.restart_policy(env)?;
        let birth_probes = args.birth_probes(env)?.unwrap_or_default();
        let quit = args.quit(env)?.unwrap_or_default();
        let quit_after = dependencies(QUIT_AFTER.label(), args.quit_after(env)?, &name)?;
        let quit_timeout = args.quit_timeout(env)?;
        let stop_after = dependencies(STOP_AFTER.label(), args.stop_after(env)?, &name)?;
        let stop_after_timeout = args.stop_after_timeout(env)?;
        let pod_name = args.pod_name(env)?.flatten();
        let namespace = args.namespace(env)?.flatten();
        let stop_signal = args.stop_signal(env)?;
        let stopped_exit_code = args.stopped_exit_code(env)?;

        let pod = match pod_name {
            Some(name) if !birth_deps.is_empty() => {
                if !cfg!(feature = "kubernetes") {
                    return Err(invalid(
                        POD_NAME.label(),
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
                    service_account_dir: args.service_account_dir(env)?,
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
                return refuse(READY_PROBE.label());
            }
            if birth_probes.iter().any(tls) {
                return refuse(BIRTH_PROBES.label());
            }
            if quit.iter().any(|e| e.target.tls) {
                return refuse(QUIT.label());
            }
        }
        if !quit_after.is_empty() && quit.is_empty() {
            return Err(invalid(
                QUIT_AFTER.label(),
                "says whom to wait for before the quit endpoints are asked, but KUBEXIT_QUIT \
                 names none; set KUBEXIT_QUIT too, or unset KUBEXIT_QUIT_AFTER",
            ));
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
            restart_policy,
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
            quit_after,
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
            if !self.quit_after.is_empty() {
                tracing::info!(
                    "Quit After: {} (the last one out asks)",
                    Name::display_list(&self.quit_after)
                );
            }
        }
        tracing::info!("Birth Timeout: {}", GoDuration(self.birth_timeout));
        tracing::info!("Grace Period: {}", GoDuration(self.grace_period));
        if let Some(probe) = &self.ready_probe {
            tracing::info!("Ready Probe: {probe}");
        }
    }
}

/// A dependency list of `setting`, none if unset; `me` may not be in it.
fn dependencies(
    setting: &'static str,
    names: Option<Vec<Name>>,
    me: &Name,
) -> Result<Vec<Name>, ConfigError> {
    let names = names.unwrap_or_default();
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
/// notify probe is the child's own word, so it cannot be one. Also the
/// check of the `kubexit.io/birth-probes` annotation.
pub fn birth_probes(raw: &str) -> Result<Vec<Probe>, String> {
    let mut probes = Vec::new();
    for spec in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let probe = Probe::parse(spec).map_err(|e| e.to_string())?;
        if probe == Probe::Notify {
            return Err(
                "notify is the child's own word and cannot wait for another process; \
                 use tcp://, http://, https://, exec: or file:"
                    .into(),
            );
        }
        if !probes.contains(&probe) {
            probes.push(probe);
        }
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
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
    fn every_default_is_applied_as_the_spec_says() {
        let config = config(args("app", &["true"])).unwrap();
        assert_eq!(config.death_policy, DeathPolicy::Any);
        assert_eq!(config.ready_period, Duration::from_millis(100));
        assert_eq!(config.ready_timeout, Duration::from_secs(1));
        assert_eq!(config.quit_timeout, Duration::from_secs(10));
        assert_eq!(config.stop_after_timeout, Duration::from_secs(20));
        assert!(config.ready_probe.is_none() && config.quit.is_empty());
        let dir = Args::default().service_account_dir(&FakeEnv(HashMap::new()));
        assert_eq!(
            dir.unwrap(),
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount")
        );
    }

    #[test]
    fn labels_are_the_variable_then_the_flag() {
        for about in Args::all_settings() {
            let variable = about
                .variable
                .expect("every supervisor setting has a variable");
            assert_eq!(about.label, format!("{variable} (--{})", about.flag));
            let upstream = format!(
                "KUBEXIT_{}",
                about.flag.to_ascii_uppercase().replace('-', "_")
            );
            assert_eq!(variable, upstream, "--{}", about.flag);
        }
    }

    /// The annotations of `kubexit inject` become these variables.
    #[cfg(feature = "inject")]
    #[test]
    fn every_variable_of_the_inject_vocabulary_is_a_setting() {
        use crate::inject::vocabulary::Setting;
        for variable in Setting::all().filter_map(Setting::variable) {
            assert!(
                Args::all_settings().any(|about| about.variable == Some(variable)),
                "{variable}"
            );
        }
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
                    Err(ConfigError::Invalid { setting, .. }) if setting == GRAVEYARD.label()
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
        assert!(
            err.starts_with("KUBEXIT_DEATH_DEPS (--death-deps): "),
            "{err}"
        );
    }

    #[test]
    fn quit_after_needs_quit_endpoints_and_may_not_name_this_process() {
        let mut a = args("app", &["true"]);
        a.quit_after = Some("worker".into());
        let err = config(a).unwrap_err().to_string();
        assert!(
            err.starts_with("KUBEXIT_QUIT_AFTER (--quit-after): ") && err.contains("KUBEXIT_QUIT"),
            "{err}"
        );
        let mut a = args("app", &["true"]);
        a.quit = Some("istio".into());
        a.quit_after = Some("worker, app".into());
        assert!(
            config(a)
                .unwrap_err()
                .to_string()
                .contains("depends on itself")
        );
        let mut a = args("app", &["true"]);
        a.quit = Some("istio".into());
        a.quit_after = Some("worker,report".into());
        let parsed = config(a).unwrap();
        assert_eq!(
            parsed.quit_after,
            [Name::new("worker").unwrap(), Name::new("report").unwrap()]
        );
    }

    #[test]
    fn a_missing_name_is_said_before_anything_else() {
        let mut a = args("app", &["true"]);
        a.name = None;
        a.grace_period = Some("soon".into());
        assert_eq!(config(a).unwrap_err(), ConfigError::NoName);
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
        assert_eq!(
            Config::from_args(args("app", &["true"]), &env).unwrap_err(),
            ConfigError::Invalid {
                setting: "KUBEXIT_SUPPRESS_STOPPED_EXITCODE",
                problem: "\"maybe\" is not a boolean; write true or false".into(),
            }
        );

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
