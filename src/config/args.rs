//! The supervisor's command line: every setting, as the `settings!` rows
//! declare it, then the flags that run kubexit in another mode, then the
//! command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::reporting::{self, LogFlags, TerminationLog};
use super::spec::{Alias, settings};
use super::{DeathPolicy, StoppedExitCode, parse};
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;
use crate::process::signals::SignalNumber;
use crate::quit::endpoint::Endpoint;
use crate::readiness::probe::Probe;

settings! {
    /// kubexit: run a command, record its life in a tombstone, and stop it when
    /// the processes it depends on die.
    #[derive(Parser, Debug, Default)]
    #[command(
        name = "kubexit",
        version,
        override_usage = "kubexit [OPTIONS] [--] COMMAND [ARGS]...",
        after_help = "Each option can also be set by the environment variable shown beside \
                      it (the flag wins). Exit status: the child's; 128+N if it was killed by \
                      signal N; KUBEXIT_STOPPED_EXIT_CODE if kubexit stopped it because a death \
                      dependency died; 2 for a configuration error; 127 command not found; 126 \
                      not executable; 1 for any other failure of kubexit."
    )]
    pub struct Args {
        settings {
            /// This process's name; its tombstone is GRAVEYARD/NAME
            name: Name = NAME {
                flag: "name",
                variable: "KUBEXIT_NAME",
                value_name: "NAME",
                default: (required),
                parse: parse::name,
            }
            /// The directory shared by all kubexit instances of a pod, created if missing
            graveyard: PathBuf = GRAVEYARD {
                flag: "graveyard",
                variable: "KUBEXIT_GRAVEYARD",
                value_name: "DIR",
                default: "/graveyard",
                parse: parse::graveyard,
            }
            /// Comma-separated names: when any of them dies, stop the child
            death_deps: Vec<Name> = DEATH_DEPS {
                flag: "death-deps",
                variable: "KUBEXIT_DEATH_DEPS",
                value_name: "NAMES",
                default: (none "none"),
                parse: parse::names,
            }
            /// Stop the child when `any` death dependency has died, or once `all` of them have
            /// (a sidecar shared by several main containers)
            death_policy: DeathPolicy = DEATH_POLICY {
                flag: "death-policy",
                variable: "KUBEXIT_DEATH_POLICY",
                value_name: "any|all",
                default: "any",
                parse: parse::death_policy,
            }
            /// The pod's restartPolicy (Never, OnFailure or Always; kubexit inject sets it): a
            /// dependency the kubelet restarts in place has not died for good, so its end stops
            /// nothing and waits for its next life
            restart_policy: RestartPolicy = RESTART_POLICY {
                flag: "restart-policy",
                variable: "KUBEXIT_RESTART_POLICY",
                value_name: "POLICY",
                default: "Never",
                parse: parse::restart_policy,
            }
            /// After the stop signal, how long before SIGKILL (Go duration: 30s, 1m30s, 500ms)
            grace_period: Duration = GRACE_PERIOD {
                flag: "grace-period",
                variable: "KUBEXIT_GRACE_PERIOD",
                value_name: "DURATION",
                default: "30s",
                parse: parse::duration,
            }
            /// Comma-separated names that must be ready before the child starts
            birth_deps: Vec<Name> = BIRTH_DEPS {
                flag: "birth-deps",
                variable: "KUBEXIT_BIRTH_DEPS",
                value_name: "NAMES",
                default: (none "none"),
                parse: parse::names,
            }
            /// Comma-separated probes that must all succeed before the child starts: birth
            /// dependencies on an address (a sidecar nobody wraps), in the syntax of --ready-probe
            birth_probes: Vec<Probe> = BIRTH_PROBES {
                flag: "birth-probes",
                variable: "KUBEXIT_BIRTH_PROBES",
                value_name: "PROBES",
                default: (none "none"),
                parse: parse::birth_probes,
            }
            /// How long to wait for birth dependencies and birth probes
            birth_timeout: Duration = BIRTH_TIMEOUT {
                flag: "birth-timeout",
                variable: "KUBEXIT_BIRTH_TIMEOUT",
                value_name: "DURATION",
                default: "30s",
                parse: parse::duration,
            }
            /// This pod's name (Kubernetes API mode for birth dependencies)
            pod_name: Option<String> = POD_NAME {
                flag: "pod-name",
                variable: "KUBEXIT_POD_NAME",
                value_name: "POD",
                default: (none "none"),
                parse: parse::text,
            }
            /// This pod's namespace (Kubernetes API mode)
            namespace: Option<String> = NAMESPACE {
                flag: "namespace",
                variable: "KUBEXIT_NAMESPACE",
                value_name: "NAMESPACE",
                default: (none "the service account's namespace"),
                parse: parse::text,
            }
            /// Where the pod's service account token, ca.crt and namespace are mounted
            /// (Kubernetes API mode)
            service_account_dir: PathBuf = SERVICE_ACCOUNT_DIR {
                flag: "service-account-dir",
                variable: "KUBEXIT_SERVICE_ACCOUNT_DIR",
                value_name: "DIR",
                default: "/var/run/secrets/kubernetes.io/serviceaccount",
                parse: parse::path,
            }
            /// Signal that asks the child to stop (alias: KUBEXIT_STOPSIGNAL)
            stop_signal: SignalNumber = STOP_SIGNAL {
                flag: "stop-signal",
                variable: "KUBEXIT_STOP_SIGNAL",
                value_name: "SIGNAL",
                default: "SIGTERM",
                aliases: &[Alias::same("KUBEXIT_STOPSIGNAL")],
                parse: parse::signal,
            }
            /// Exit status when kubexit stopped the child because a death dependency died:
            /// a number 0-255, or `child` for the child's own status (aliases:
            /// KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS and KUBEXIT_SUPPRESS_STOPPED_EXITCODE,
            /// true for 0, false for child)
            stopped_exit_code: StoppedExitCode = STOPPED_EXIT_CODE {
                flag: "stopped-exit-code",
                variable: "KUBEXIT_STOPPED_EXIT_CODE",
                value_name: "CODE|child",
                default: "0",
                aliases: &[
                    Alias::translated(
                        "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS",
                        parse::fork_stopped_exit_code,
                    ),
                    Alias::translated(
                        "KUBEXIT_SUPPRESS_STOPPED_EXITCODE",
                        parse::fork_stopped_exit_code,
                    ),
                ],
                parse: parse::stopped_exit_code,
            }
            /// Once the child has ended: quit endpoints of sidecars nobody wraps, comma-separated,
            /// each called with a POST (GET:URL for a GET): URLs, or presets istio, linkerd,
            /// cloud-sql-proxy, envoy:PORT
            quit: Vec<Endpoint> = QUIT {
                flag: "quit",
                variable: "KUBEXIT_QUIT",
                value_name: "ENDPOINTS",
                default: (none "none"),
                parse: parse::quit,
            }
            /// Comma-separated names: the other main containers that share the sidecars of
            /// --quit; the endpoints are asked only once they have all died (the last one out
            /// asks), waiting at most --quit-timeout for those that have not started
            quit_after: Vec<Name> = QUIT_AFTER {
                flag: "quit-after",
                variable: "KUBEXIT_QUIT_AFTER",
                value_name: "NAMES",
                default: (none "none"),
                parse: parse::names,
            }
            /// How long the quit endpoints are tried (and, first, how long the processes of
            /// --quit-after that have not started are waited for)
            quit_timeout: Duration = QUIT_TIMEOUT {
                flag: "quit-timeout",
                variable: "KUBEXIT_QUIT_TIMEOUT",
                value_name: "DURATION",
                default: "10s",
                parse: parse::duration,
            }
            /// Comma-separated names: a stop signal from outside is held until all of them have
            /// died (the pod is being deleted, and they drain through this sidecar)
            stop_after: Vec<Name> = STOP_AFTER {
                flag: "stop-after",
                variable: "KUBEXIT_STOP_AFTER",
                value_name: "NAMES",
                default: (none "none"),
                parse: parse::names,
            }
            /// How long a stop signal is held for the processes of --stop-after
            stop_after_timeout: Duration = STOP_AFTER_TIMEOUT {
                flag: "stop-after-timeout",
                variable: "KUBEXIT_STOP_AFTER_TIMEOUT",
                value_name: "DURATION",
                default: "20s",
                parse: parse::duration,
            }
            /// How to tell the child is ready: tcp://HOST:PORT, http(s)://HOST:PORT/PATH,
            /// exec:COMMAND ARGS, file:PATH or notify
            ready_probe: Probe = READY_PROBE {
                flag: "ready-probe",
                variable: "KUBEXIT_READY_PROBE",
                value_name: "PROBE",
                default: (none "ready when started"),
                parse: parse::probe,
            }
            /// How often the readiness probe is tried until it succeeds
            ready_period: Duration = READY_PERIOD {
                flag: "ready-period",
                variable: "KUBEXIT_READY_PERIOD",
                value_name: "DURATION",
                default: "100ms",
                parse: parse::period,
            }
            /// How long one attempt of the readiness probe may take
            ready_timeout: Duration = READY_TIMEOUT {
                flag: "ready-timeout",
                variable: "KUBEXIT_READY_TIMEOUT",
                value_name: "DURATION",
                default: "1s",
                parse: parse::duration,
            }
            /// Where to write one line saying why kubexit exited, for `kubectl describe pod`;
            /// `none` turns it off; Kubernetes' own file is written only when it exists
            termination_log: TerminationLog = TERMINATION_LOG {
                flag: "termination-log",
                variable: "KUBEXIT_TERMINATION_LOG",
                value_name: "PATH|none",
                default: "/dev/termination-log",
                parse: reporting::termination_log,
            }
        }

        /// The log's settings, shared with `kubexit webhook`
        #[command(flatten)]
        pub log: LogFlags,

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
}

impl Args {
    /// Every setting of the supervisor's command line, the log's included.
    pub fn all_settings() -> impl Iterator<Item = &'static super::spec::About> {
        Args::SETTINGS.iter().chain(LogFlags::SETTINGS).copied()
    }
}
