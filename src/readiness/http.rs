//! The HTTP/1.1 client of `http://` and `https://` probes and of quit
//! calls: one request per connection, and of the answer only its status
//! code.
//!
//! Both callers ask one question of a server they do not control, "what
//! status does it answer?", so the client is small: it connects through
//! the [`Resolver`], makes the TLS handshake for an `https` target (the
//! `tls` module, without certificate verification), sends a request with
//! no body and `Connection: close`, reads until the end of the status line
//! (at most 4 KiB) and closes: the rest of an answer is never looked at.
//! Time is the caller's to bound: each caller puts its own timeout around
//! [`status`].
//! What the code means (200–399 for a probe, 2xx for a quit) is the
//! caller's too.

use std::fmt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::readiness::probe::{HttpTarget, bracketed};
use crate::readiness::resolve::{ConnectError, Resolver};

/// Why a request got no status code.
#[derive(Debug)]
pub enum Failure {
    /// No connection: the name did not resolve, or nothing accepted.
    Connect(ConnectError),
    /// The TLS handshake, the request or the answer failed.
    Exchange(String),
    /// The server closed the connection without a word.
    NoAnswer,
    /// What came back is not an HTTP status line.
    NotHttp(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(err) => write!(f, "{err}"),
            Failure::Exchange(reason) => f.write_str(reason),
            Failure::NoAnswer => f.write_str("the connection closed without an answer"),
            Failure::NotHttp(line) => write!(f, "not an HTTP answer: {line:?}"),
        }
    }
}

/// A request without a body for `target`: `method`, `Host`, `headers` in
/// order, then `Connection: close`.
pub fn request(method: &str, target: &HttpTarget, headers: &[(&str, &str)]) -> String {
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\n",
        target.path,
        bracketed(&target.host),
        target.port
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// Sends `request` to `target` and returns the answer's status code.
pub async fn status(
    resolver: &Resolver,
    target: &HttpTarget,
    request: &str,
) -> Result<u16, Failure> {
    let stream = resolver.connect().await.map_err(Failure::Connect)?;
    let line = exchange(stream, target, request)
        .await
        .map_err(Failure::Exchange)?;
    status_code(&line)
}

/// The status code of an `HTTP/1.x NNN ...` status line.
pub fn status_code(status_line: &str) -> Result<u16, Failure> {
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    match code {
        Some(code) => Ok(code),
        None if status_line.is_empty() => Err(Failure::NoAnswer),
        None => Err(Failure::NotHttp(status_line.to_owned())),
    }
}

/// Sends `request` over `stream` (plain, or TLS for an https target) and
/// returns the answer's status line.
async fn exchange(stream: TcpStream, target: &HttpTarget, request: &str) -> Result<String, String> {
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

/// Reads until the end of the status line (at most 4 KiB).
async fn read_status_line<R: AsyncReadExt + Unpin>(reader: &mut R) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_no_body_and_closes_the_connection() {
        let target = HttpTarget {
            tls: false,
            host: "::1".into(),
            port: 8080,
            path: "/quit".into(),
        };
        assert_eq!(
            request("POST", &target, &[("Content-Length", "0")]),
            "POST /quit HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_status_line_gives_its_code_and_anything_else_says_what_it_is() {
        assert_eq!(status_code("HTTP/1.1 204 No Content").ok(), Some(204));
        assert!(matches!(status_code(""), Err(Failure::NoAnswer)));
        assert!(matches!(
            status_code("SSH-2.0-OpenSSH"),
            Err(Failure::NotHttp(_))
        ));
        assert!(matches!(
            status_code("HTTP/1.1 OK"),
            Err(Failure::NotHttp(_))
        ));
    }
}
