//! Readiness probes as they are written: what `KUBEXIT_READY_PROBE` and
//! `KUBEXIT_BIRTH_PROBES` (and their `kubexit.io/` annotations) may say.
//!
//! A dependency's readiness is declared in its own tombstone (`Ready`), so
//! birth dependencies work without the Kubernetes API, in any pod, in docker
//! compose, on a VM. This module says what a probe is, parses it and prints
//! it back; running one is the `attempt` module's, scheduling attempts
//! (every `KUBEXIT_READY_PERIOD`, each bounded by `KUBEXIT_READY_TIMEOUT`)
//! the prober's. Quit endpoints are written as the HTTP targets parsed
//! here (`quit::endpoint`).
//!
//! The kinds follow the kubelet's judgement where it has one:
//!
//! | probe | ready when |
//! |---|---|
//! | `tcp://HOST:PORT` | a TCP connection is accepted |
//! | `http://HOST:PORT/PATH` | the response status is 200–399 |
//! | `https://HOST:PORT/PATH` | likewise, over TLS, without certificate verification (as the kubelet) |
//! | `exec:COMMAND ARGS` | the command exits 0 (run directly: no shell needed) |
//! | `file:PATH` | the path exists |
//! | `notify` | the child sends `READY=1` to `$NOTIFY_SOCKET` (systemd's protocol) |

use std::fmt;
use std::path::PathBuf;

/// How the child's readiness is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp { host: String, port: u16 },
    Http(HttpTarget),
    Exec { argv: Vec<String> },
    File { path: PathBuf },
    Notify,
}

/// Where an HTTP probe sends its GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// A probe specification that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a probe; write tcp://HOST:PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH, \
     exec:COMMAND ARGS, file:PATH or notify"
)]
pub struct ProbeError(pub String);

impl Probe {
    /// The host and port a network probe connects to.
    pub fn address(&self) -> Option<(&str, u16)> {
        match self {
            Probe::Tcp { host, port } => Some((host, *port)),
            Probe::Http(target) => Some((&target.host, target.port)),
            _ => None,
        }
    }

    pub fn parse(raw: &str) -> Result<Probe, ProbeError> {
        let bad = || ProbeError(raw.to_owned());
        let spec = raw.trim();
        if spec == "notify" {
            return Ok(Probe::Notify);
        }
        if let Some(rest) = spec.strip_prefix("tcp://") {
            let (host, port) = host_port(rest, None).ok_or_else(bad)?;
            return Ok(Probe::Tcp { host, port });
        }
        for (scheme, tls, default_port) in [("http://", false, 80), ("https://", true, 443)] {
            if let Some(rest) = spec.strip_prefix(scheme) {
                let (authority, path) = match rest.find('/') {
                    Some(slash) => (&rest[..slash], &rest[slash..]),
                    None => (rest, "/"),
                };
                let (host, port) = host_port(authority, Some(default_port)).ok_or_else(bad)?;
                if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad());
                }
                return Ok(Probe::Http(HttpTarget {
                    tls,
                    host,
                    port,
                    path: path.to_owned(),
                }));
            }
        }
        if let Some(rest) = spec.strip_prefix("exec:") {
            let argv: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            return if argv.is_empty() {
                Err(bad())
            } else {
                Ok(Probe::Exec { argv })
            };
        }
        if let Some(rest) = spec.strip_prefix("file:") {
            return if rest.is_empty() {
                Err(bad())
            } else {
                Ok(Probe::File { path: rest.into() })
            };
        }
        Err(bad())
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracketed(host)),
            Probe::Http(t) => {
                let scheme = if t.tls { "https" } else { "http" };
                write!(f, "{scheme}://{}:{}{}", bracketed(&t.host), t.port, t.path)
            }
            Probe::Exec { argv } => write!(f, "exec:{}", argv.join(" ")),
            Probe::File { path } => write!(f, "file:{}", path.display()),
            Probe::Notify => f.write_str("notify"),
        }
    }
}

/// A host as it goes in a URL: IPv6 addresses in brackets.
pub fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Splits `host:port` (IPv6 as `[::1]:port`); the port may default.
fn host_port(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_prints_back() {
        for spec in [
            "tcp://localhost:5432",
            "tcp://[::1]:8080",
            "http://127.0.0.1:8080/healthz",
            "https://db.local:8443/ready?full=1",
            "exec:pg_isready -h localhost",
            "file:/tmp/ready",
            "notify",
        ] {
            let probe = Probe::parse(spec).unwrap();
            assert_eq!(probe.to_string(), spec);
        }
        assert_eq!(
            Probe::parse("http://example").unwrap().to_string(),
            "http://example:80/"
        );
    }

    #[test]
    fn malformed_probes_are_refused() {
        for spec in [
            "",
            "tcp://host",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://:80",
            "udp://host:53",
            "http://host:x/",
            "http://[::1/",
            "exec:",
            "exec:   ",
            "file:",
            "notify-me",
        ] {
            assert!(Probe::parse(spec).is_err(), "{spec:?} accepted");
        }
    }
}
