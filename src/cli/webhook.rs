//! `kubexit webhook` on the command line: flags, the log, and the exit
//! status around the server (the webhook module).
//!
//! It is reached as `kubexit inject` is (see the cli module): only when
//! `KUBEXIT_NAME` is not in the environment, so that a supervised child
//! named `webhook` still runs. The log is kubexit's: the supervisor's log
//! flags and variables (`--log-format` / `KUBEXIT_LOG_FORMAT`...) are
//! flattened in and read by the same reader ([`LogFlags::read`]), with
//! `name` "webhook" in JSON lines.
//!
//! Its own flags are rows of the same specification as the supervisor's
//! settings (`config::spec`): each row declares the flag, its default, its
//! parser and its help, and an error names the flag (`--listen "8443": not
//! an address and port; ...`). They have no variables: the webhook is a
//! Deployment of its own, configured by its arguments.
//!
//! Exit status: 0 after a stop signal, once the reviews in flight are
//! answered; 2 for bad input (a usage error, a flag's value, certificate
//! or key files that cannot be read or do not match), with the input and
//! the fix named; 1 when it cannot run (the address is taken, say).

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::exit::{EXIT_CONFIG, EXIT_FAILURE};
use super::log;
use crate::config::spec::{Problem, settings, utf8};
use crate::config::{ConfigError, Log, LogFlags, ProcessEnvironment, parse};
use crate::duration::GoDuration;
use crate::inject::pod;
use crate::inject::{Options, vocabulary::Setting};
use crate::process::signals;
use crate::registry::{self, Keyring};
use crate::webhook::{self, Limits, Lookup, Settings};

settings! {
    /// kubexit webhook: the mutating admission webhook that injects kubexit into the pods of
    /// labelled namespaces, as their kubexit.io/ annotations say (the same transformation as
    /// kubexit inject).
    #[derive(Parser, Debug)]
    #[command(
        name = "kubexit webhook",
        version,
        override_usage = "kubexit webhook --tls-cert FILE --tls-key FILE [OPTIONS]",
        after_help = "Serves POST /inject (admission.k8s.io/v1 AdmissionReview for Pods), \
                      GET /healthz, GET /readyz and GET /metrics (Prometheus) over HTTPS. The \
                      certificate and key are read again when their files change. SIGTERM: \
                      /readyz fails, and after --shutdown-delay no connection is accepted, the \
                      reviews in flight are answered, and it exits 0. Manifests to install it: \
                      deploy/webhook/; see docs/webhook.md. Exit status: 0 stopped; 2 bad \
                      input; 1 cannot run.\n\n\
                      Example: kubexit webhook --tls-cert /tls/tls.crt --tls-key /tls/tls.key"
    )]
    pub struct WebhookArgs {
        settings {
            /// The server's certificate chain, PEM (cert-manager's tls.crt)
            tls_cert: PathBuf = TLS_CERT {
                flag: "tls-cert",
                value_name: "FILE",
                default: (required),
                clap: (required = true),
                parse: parse::path,
            }
            /// Its private key, PEM (cert-manager's tls.key)
            tls_key: PathBuf = TLS_KEY {
                flag: "tls-key",
                value_name: "FILE",
                default: (required),
                clap: (required = true),
                parse: parse::path,
            }
            /// Where to listen
            listen: SocketAddr = LISTEN {
                flag: "listen",
                value_name: "ADDR:PORT",
                default: "0.0.0.0:8443",
                parse: listen,
            }
            /// Image of the init container that installs kubexit, for pods that do not set
            /// kubexit.io/image (ghcr.io/kubexit/kubexit:VERSION)
            image: String = IMAGE {
                flag: "image",
                value_name: "IMAGE",
                default: (none "this version's image"),
                parse: image,
            }
            /// The largest review read, in bytes (suffixes Ki, Mi); larger ones get 413
            max_request_bytes: usize = MAX_REQUEST_BYTES {
                flag: "max-request-bytes",
                value_name: "BYTES",
                default: "3Mi",
                parse: request_bytes,
            }
            /// Longest a request may take to arrive, from its first byte (or the
            /// connection's opening) to its last, as a Go duration
            request_timeout: Duration = REQUEST_TIMEOUT {
                flag: "request-timeout",
                value_name: "DURATION",
                default: "10s",
                parse: request_timeout,
            }
            /// Longest a keep-alive connection may wait for its next request
            idle_timeout: Duration = IDLE_TIMEOUT {
                flag: "idle-timeout",
                value_name: "DURATION",
                default: "120s",
                parse: parse::duration,
            }
            /// Connections served at once; more wait to be accepted
            max_connections: usize = MAX_CONNECTIONS {
                flag: "max-connections",
                value_name: "N",
                default: "256",
                parse: connections,
            }
            /// After SIGTERM, how long to go on serving with /readyz failing, so that the
            /// Service's endpoints drop this replica before it stops accepting
            shutdown_delay: Duration = SHUTDOWN_DELAY {
                flag: "shutdown-delay",
                value_name: "DURATION",
                default: "0s",
                parse: parse::duration,
            }
            /// Whether a container without command is wrapped in its image's ENTRYPOINT and
            /// CMD, read from the image's registry (on), or refused unless it has
            /// kubexit.io/entrypoint.NAME (off)
            registry_lookup: bool = REGISTRY_LOOKUP {
                flag: "registry-lookup",
                value_name: "on|off",
                default: "on",
                parse: on_off,
            }
            /// The most one review's lookup of images may take, every registry together;
            /// within the registration's timeoutSeconds
            registry_timeout: Duration = REGISTRY_TIMEOUT {
                flag: "registry-timeout",
                value_name: "DURATION",
                default: "3s",
                parse: request_timeout,
            }
            /// Registry credentials, a Docker config JSON (a mounted pull secret's
            /// .dockerconfigjson), read at start
            registry_auth_file: PathBuf = REGISTRY_AUTH_FILE {
                flag: "registry-auth-file",
                value_name: "FILE",
                default: (none "anonymous"),
                parse: parse::path,
            }
            /// Whether the credentials of the pod's imagePullSecrets and its ServiceAccount's are
            /// read from the Kubernetes API, ahead of --registry-auth-file (on: needs get on
            /// secrets and serviceaccounts, deploy/webhook/pull-secrets.yaml)
            registry_pull_secrets: bool = REGISTRY_PULL_SECRETS {
                flag: "registry-pull-secrets",
                value_name: "on|off",
                default: "off",
                parse: on_off,
            }
            /// Registries (HOST[:PORT], comma-separated) spoken to over plain HTTP
            insecure_registries: Vec<String> = INSECURE_REGISTRIES {
                flag: "insecure-registries",
                value_name: "HOSTS",
                default: (none "none"),
                parse: hosts,
            }
        }

        /// The log's settings, as the supervisor's
        #[command(flatten)]
        pub log: LogFlags,
    }
}

impl WebhookArgs {
    /// The server's settings, read in the order they are checked.
    fn settings(&self) -> Result<Settings, ConfigError> {
        let env = &ProcessEnvironment;
        let listen = self.listen(env)?;
        let request_timeout = self.request_timeout(env)?;
        let idle_timeout = self.idle_timeout(env)?;
        let shutdown_delay = self.shutdown_delay(env)?;
        let max_request_bytes = self.max_request_bytes(env)?;
        let max_connections = self.max_connections(env)?;
        let options = Options {
            image: self.image(env)?.unwrap_or_else(pod::default_image),
            ..Options::default()
        };
        let registry = if self.registry_lookup(env)? {
            let budget = self.registry_timeout(env)?;
            let keyring = match self.registry_auth_file(env)? {
                Some(file) => read_keyring(&file)?,
                None => Keyring::anonymous(),
            };
            Some(Lookup {
                settings: registry::Settings {
                    budget,
                    per_call: registry::DEFAULT_PER_CALL.min(budget),
                    insecure: self.insecure_registries(env)?.unwrap_or_default(),
                    ..registry::Settings::default()
                },
                keyring,
                pull_secrets: self.registry_pull_secrets(env)?,
            })
        } else {
            None
        };
        Ok(Settings {
            listen,
            tls_cert: self.tls_cert(env)?,
            tls_key: self.tls_key(env)?,
            options,
            limits: Limits {
                max_request_bytes,
                request_timeout,
                idle_timeout,
                max_connections,
            },
            shutdown_delay,
            registry,
        })
    }
}

/// The credentials of `--registry-auth-file`.
fn read_keyring(file: &std::path::Path) -> Result<Keyring, ConfigError> {
    let invalid = |why: String| ConfigError::InvalidValue {
        setting: REGISTRY_AUTH_FILE.about.label,
        value: file.display().to_string(),
        why,
    };
    let bytes = std::fs::read(file).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    Keyring::from_docker_config(&bytes, &format!("--registry-auth-file {}", file.display()))
        .map_err(|e| invalid(e.to_string()))
}

fn on_off(raw: &OsStr) -> Result<bool, Problem> {
    match utf8(raw)?.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(Problem::OfValue("write on or off".into())),
    }
}

/// `HOST[:PORT]`s, comma-separated.
fn hosts(raw: &OsStr) -> Result<Vec<String>, Problem> {
    let hosts: Vec<String> = utf8(raw)?
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = hosts
        .iter()
        .find(|h| h.contains('/') || h.contains(char::is_whitespace))
    {
        return Err(Problem::OfValue(format!(
            "{bad:?} is not HOST[:PORT]; write registry.local:5000,10.0.0.7"
        )));
    }
    Ok(hosts)
}

fn listen(raw: &OsStr) -> Result<SocketAddr, Problem> {
    utf8(raw)?.trim().parse().map_err(|_| {
        Problem::OfValue("not an address and port; write 0.0.0.0:8443 or [::]:8443".into())
    })
}

/// Checked as the annotation it stands for would be.
fn image(raw: &OsStr) -> Result<String, Problem> {
    let image = utf8(raw)?;
    let check = [(Setting::Image.pod_key(), image.to_owned())]
        .into_iter()
        .collect();
    crate::inject::vocabulary::read(&check).map_err(Problem::said)?;
    Ok(image.trim().to_owned())
}

fn request_bytes(raw: &OsStr) -> Result<usize, Problem> {
    parse_bytes(utf8(raw)?).filter(|&n| n > 0).ok_or_else(|| {
        Problem::OfValue("write a positive number of bytes, such as 3Mi, 512Ki or 1048576".into())
    })
}

fn request_timeout(raw: &OsStr) -> Result<Duration, Problem> {
    let timeout = parse::duration(raw)?;
    if timeout.is_zero() {
        return Err("must be more than 0s, such as 10s".into());
    }
    Ok(timeout)
}

fn connections(raw: &OsStr) -> Result<usize, Problem> {
    utf8(raw)?
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=65_536).contains(n))
        .ok_or_else(|| Problem::OfValue("write a number from 1 to 65536".into()))
}

/// Bytes as `1048576`, `512Ki` or `3Mi`.
fn parse_bytes(raw: &str) -> Option<usize> {
    let raw = raw.trim();
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, ""),
    };
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        _ => return None,
    };
    digits.parse::<usize>().ok()?.checked_mul(scale)
}

/// Runs `kubexit webhook ARGS...`; `args` starts with `webhook`.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let parsed = match WebhookArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    let log = match parsed.log.read(&ProcessEnvironment) {
        Ok(log) => log,
        Err(err) => {
            log::init(&Log::PLAIN, Some("webhook".into()));
            tracing::error!("{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    log::init(&log, Some("webhook".into()));
    let settings = match parsed.settings() {
        Ok(settings) => settings,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before the event loop exists: SIGTERM waits in the queue until the
    // server reads it, rather than killing the process mid-answer.
    if let Err(err) = signals::block_all() {
        tracing::error!("cannot block signals: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    tracing::info!(
        "kubexit webhook {}: install image {}; requests up to {} bytes within {}; idle connections \
         closed after {}; at most {} connections",
        env!("CARGO_PKG_VERSION"),
        settings.options.image,
        settings.limits.max_request_bytes,
        GoDuration(settings.limits.request_timeout),
        GoDuration(settings.limits.idle_timeout),
        settings.limits.max_connections
    );
    match &settings.registry {
        Some(lookup) => tracing::info!(
            "Containers without command are wrapped in their images' ENTRYPOINT and CMD, read \
             from their registries within {} a review ({})",
            GoDuration(lookup.settings.budget),
            match (lookup.pull_secrets, lookup.keyring.searched()) {
                (false, []) => "anonymously".to_owned(),
                (true, []) => "with the credentials of each pod's pull secrets".to_owned(),
                (false, files) => format!("with the credentials of {}", files.join(", ")),
                (true, files) => format!(
                    "with the credentials of each pod's pull secrets, then {}",
                    files.join(", ")
                ),
            }
        ),
        None => tracing::info!(
            "Registries are not asked (--registry-lookup off): a container without command \
             needs kubexit.io/entrypoint.NAME"
        ),
    }
    match webhook::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::from(if err.is_bad_input() {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::About;
    use clap::CommandFactory;

    /// Whether `help` (clap's rendering of the command) shows each of
    /// `settings` on its flag's line with its default. The supervisor's
    /// help is held to its spec by tests/suite/configuration.rs, through the
    /// binary; the webhook's spec is not part of the library's API.
    fn help_shows(help: &str, settings: &[&About]) -> Result<(), String> {
        for about in settings {
            let flag = format!("--{} <", about.flag);
            let line = help
                .lines()
                .find(|line| line.trim_start().starts_with(&flag))
                .ok_or_else(|| format!("--help lacks --{}:\n{help}", about.flag))?;
            let mut wanted = vec![about.absent.in_help()];
            wanted.extend(about.variable.map(|v| format!("[env: {v}=")));
            for word in wanted {
                if !line.contains(&word) {
                    return Err(format!(
                        "--help's line of --{} lacks {word}:\n{line}",
                        about.flag
                    ));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn sizes_are_bytes_or_binary_multiples() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512Ki"), Some(512 << 10));
        assert_eq!(parse_bytes(" 3Mi "), Some(3 << 20));
        assert_eq!(parse_bytes("3MB"), None);
        assert_eq!(parse_bytes("Mi"), None);
        assert_eq!(parse_bytes("-1"), None);
    }

    #[test]
    fn the_defaults_make_valid_settings() {
        let args =
            WebhookArgs::try_parse_from(["webhook", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
        let settings = args.settings().unwrap();
        assert_eq!(settings.limits.max_request_bytes, 3 << 20);
        assert_eq!(settings.limits.request_timeout, Duration::from_secs(10));
        assert_eq!(settings.options.image, pod::default_image());
        assert!(settings.options.overrides.is_empty());
    }

    #[test]
    fn help_shows_every_setting_with_its_default() {
        let help = WebhookArgs::command().render_help().to_string();
        help_shows(&help, WebhookArgs::SETTINGS).unwrap();
        help_shows(&help, LogFlags::SETTINGS).unwrap();
    }
}
