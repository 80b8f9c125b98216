//! `kubexit webhook` on the command line: flags, the log, and the exit
//! status around the server (the webhook module).
//!
//! It is reached as `kubexit inject` is (see the cli module): only when
//! `KUBEXIT_NAME` is not in the environment, so that a supervised child
//! named `webhook` still runs. The log is kubexit's, configured by the
//! same flags and variables (`--log-format` / `KUBEXIT_LOG_FORMAT`...),
//! with `name` "webhook" in JSON lines.
//!
//! Exit status: 0 after a stop signal, once the reviews in flight are
//! answered; 2 for bad input (a usage error, a flag's value, certificate
//! or key files that cannot be read or do not match), with the input and
//! the fix named; 1 when it cannot run (the address is taken, say).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::exit::{EXIT_CONFIG, EXIT_FAILURE};
use super::log;
use crate::config::{Args, ProcessEnvironment, Reporting};
use crate::duration::{self, GoDuration};
use crate::inject::pod;
use crate::inject::{Options, vocabulary::Setting};
use crate::process::signals;
use crate::webhook::{self, Limits, Settings};

/// kubexit webhook: the mutating admission webhook that injects kubexit into the pods of
/// labelled namespaces, as their kubexit.io/ annotations say (the same transformation as
/// kubexit inject).
#[derive(Parser, Debug)]
#[command(
    name = "kubexit webhook",
    version,
    override_usage = "kubexit webhook --tls-cert FILE --tls-key FILE [OPTIONS]",
    after_help = "Serves POST /inject (admission.k8s.io/v1 AdmissionReview for Pods), GET /healthz, \
                  GET /readyz and GET /metrics (Prometheus) over HTTPS. The certificate and key are read again when their \
                  files change. SIGTERM: /readyz fails, and after --shutdown-delay no connection \
                  is accepted, the reviews in flight are answered, and it exits 0. Manifests to \
                  install it: deploy/webhook/; see docs/webhook.md. Exit status: 0 stopped; \
                  2 bad input; 1 cannot run.\n\n\
                  Example: kubexit webhook --tls-cert /tls/tls.crt --tls-key /tls/tls.key"
)]
pub struct WebhookArgs {
    /// The server's certificate chain, PEM (cert-manager's tls.crt)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// Its private key, PEM (cert-manager's tls.key)
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,

    /// Where to listen
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8443")]
    pub listen: String,

    /// Image of the init container that installs kubexit, for pods that do not set
    /// kubexit.io/image [default: this version's, ghcr.io/kubexit/kubexit:VERSION]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// The largest review read, in bytes (suffixes Ki, Mi); larger ones get 413
    #[arg(long, value_name = "BYTES", default_value = "3Mi")]
    pub max_request_bytes: String,

    /// Longest a request may take to arrive, from its first byte (or the
    /// connection's opening) to its last, as a Go duration
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub request_timeout: String,

    /// Longest a keep-alive connection may wait for its next request
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub idle_timeout: String,

    /// Connections served at once; more wait to be accepted
    #[arg(long, value_name = "N", default_value = "256")]
    pub max_connections: String,

    /// After SIGTERM, how long to go on serving with /readyz failing, so that the
    /// Service's endpoints drop this replica before it stops accepting
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub shutdown_delay: String,

    /// Log lines as `text` or `json` (one object per line) [default: text]
    #[arg(long, env = "KUBEXIT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<OsString>,

    /// The least important level logged: error, warn, info, debug or trace [default: info]
    #[arg(long, env = "KUBEXIT_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<OsString>,

    /// Start text log lines with a timestamp: true or false [default: false]
    #[arg(long, env = "KUBEXIT_LOG_TIMESTAMPS", value_name = "BOOL")]
    pub log_timestamps: Option<OsString>,
}

impl WebhookArgs {
    /// The log's settings, read as kubexit reads them when it supervises.
    fn reporting(&self) -> Result<Reporting, String> {
        let args = Args {
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            log_timestamps: self.log_timestamps.clone(),
            ..Args::default()
        };
        Reporting::from_args(&args, &ProcessEnvironment).map_err(|e| e.to_string())
    }

    fn settings(&self) -> Result<Settings, String> {
        let listen: SocketAddr = self.listen.trim().parse().map_err(|_| {
            format!(
                "--listen {:?}: not an address and port; write 0.0.0.0:8443 or [::]:8443",
                self.listen
            )
        })?;
        let duration_flag =
            |flag: &str, raw: &str| duration::parse(raw).map_err(|e| format!("--{flag}: {e}"));
        let request_timeout = duration_flag("request-timeout", &self.request_timeout)?;
        if request_timeout.is_zero() {
            return Err("--request-timeout must be more than 0s".into());
        }
        let idle_timeout = duration_flag("idle-timeout", &self.idle_timeout)?;
        let shutdown_delay = duration_flag("shutdown-delay", &self.shutdown_delay)?;
        let max_request_bytes = parse_bytes(&self.max_request_bytes)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!(
                    "--max-request-bytes {:?}: write a positive number of bytes, such as 3Mi, 512Ki \
                     or 1048576",
                    self.max_request_bytes
                )
            })?;
        let max_connections = self
            .max_connections
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=65_536).contains(n))
            .ok_or_else(|| {
                format!(
                    "--max-connections {:?}: write a number from 1 to 65536",
                    self.max_connections
                )
            })?;
        let mut options = Options::default();
        if let Some(image) = &self.image {
            // Checked as the annotation it stands for would be.
            let annotation = Setting::Image.pod_key();
            let check = [(annotation.clone(), image.clone())].into_iter().collect();
            crate::inject::vocabulary::read(&check).map_err(|e| format!("--image: {e}"))?;
            options.image = image.trim().to_owned();
        } else {
            options.image = pod::default_image();
        }
        Ok(Settings {
            listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            options,
            limits: Limits {
                max_request_bytes,
                request_timeout,
                idle_timeout,
                max_connections,
            },
            shutdown_delay,
        })
    }
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
    let reporting = match parsed.reporting() {
        Ok(reporting) => reporting,
        Err(message) => {
            log::init(&Reporting::default(), Some("webhook".into()));
            tracing::error!("{message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    log::init(&reporting, Some("webhook".into()));
    let settings = match parsed.settings() {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
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
    use std::time::Duration;

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
}
