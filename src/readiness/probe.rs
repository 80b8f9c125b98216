//! Readiness probes: how kubexit decides that its child is ready.
//!
//! A dependency's readiness is declared in its own tombstone (`Ready`), so
//! birth dependencies work without the Kubernetes API, in any pod, in docker
//! compose, on a VM. This module says what a probe is and runs one attempt
//! of the network and file kinds; the supervisor schedules attempts (every
//! `KUBEXIT_READY_PERIOD`, each bounded by `KUBEXIT_READY_TIMEOUT`) and runs
//! the kinds that involve processes (`exec:`, through the reaper) and the
//! notify socket.
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
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::readiness::resolve::Resolver;

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

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The name did not resolve (to any address).
    Resolve(String),
    /// The last address tried refused or failed.
    Connect(io::Error),
}

impl ConnectError {
    /// Nothing listens there: the server is not up, or is gone.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(reason) => f.write_str(reason),
            ConnectError::Connect(err) => write!(f, "{err}"),
        }
    }
}

/// Connects to the first of the host's addresses that accepts. Name
/// resolution is the resolver's, bounded by the caller's timeout.
pub async fn connect(resolver: &Resolver) -> Result<TcpStream, ConnectError> {
    let addresses = resolver.resolve().await.map_err(ConnectError::Resolve)?;
    let mut last = ConnectError::Resolve("the name resolves to no address".into());
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = ConnectError::Connect(err),
        }
    }
    Err(last)
}

/// Sends `request` over `stream` (plain, or TLS for an https target) and
/// returns the answer's status line.
pub async fn exchange(
    stream: TcpStream,
    target: &HttpTarget,
    request: &str,
) -> Result<String, String> {
    if target.tls {
        #[cfg(feature = "tls")]
        {
            let stream = crate::readiness::tls::connect(stream, &target.host).await?;
            return send(stream, request).await;
        }
        #[cfg(not(feature = "tls"))]
        return Err("this kubexit was built without the tls feature".into());
    }
    send(stream, request).await
}

/// Writes `request` and reads the answer's status line.
async fn send<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<String, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_status_line(&mut stream).await
}

/// One attempt of a TCP probe: Ok when a connection is accepted.
pub async fn check_tcp(resolver: &Resolver, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, connect(resolver)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no connection within {}",
            crate::duration::GoDuration(timeout)
        )),
    }
}

/// One attempt of an HTTP or HTTPS probe: Ok for a status of 200–399.
pub async fn check_http(
    target: &HttpTarget,
    resolver: &Resolver,
    timeout: Duration,
) -> Result<(), String> {
    let attempt = async {
        let stream = connect(resolver).await.map_err(|e| e.to_string())?;
        judge_status(&exchange(stream, target, &http_request(target)).await?)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            crate::duration::GoDuration(timeout)
        )),
    }
}

/// The GET request a probe sends, as the kubelet's: no body, no keep-alive.
pub fn http_request(target: &HttpTarget) -> String {
    let host = bracketed(&target.host);
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: kubexit-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.port
    )
}

/// Reads until the end of the status line (at most 4 KiB).
pub async fn read_status_line<R: AsyncReadExt + Unpin>(reader: &mut R) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 512];
    while !head.contains(&b'\n') {
        let n = reader.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
        if head.len() > 4096 {
            break;
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_owned())
}

/// The status code of an `HTTP/1.x NNN ...` status line.
pub fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    let code = parts.next()?.parse::<u16>().ok()?;
    version.starts_with("HTTP/").then_some(code)
}

/// Ok for `HTTP/1.x NNN` with 200 <= NNN < 400.
pub fn judge_status(status_line: &str) -> Result<(), String> {
    match status_code(status_line) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP status {code}")),
        None if status_line.is_empty() => Err("the connection closed without an answer".into()),
        None => Err(format!("not an HTTP answer: {status_line:?}")),
    }
}

/// One attempt of a file probe.
pub fn check_file(path: &std::path::Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(err) => Err(err.to_string()),
    }
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

    #[test]
    fn http_statuses_are_judged_as_the_kubelet_does() {
        assert!(judge_status("HTTP/1.1 200 OK").is_ok());
        assert!(judge_status("HTTP/1.0 302 Found").is_ok());
        assert!(judge_status("HTTP/1.1 399 Whatever").is_ok());
        assert_eq!(
            judge_status("HTTP/1.1 503 Unavailable"),
            Err("HTTP status 503".into())
        );
        assert!(judge_status("HTTP/1.1 199 Early").is_err());
        assert!(judge_status("SSH-2.0-OpenSSH").is_err());
        assert!(judge_status("").is_err());
    }
}
