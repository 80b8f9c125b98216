//! Addresses for probes and quit calls: a host's name resolved, bounded,
//! and a connection to the first of its addresses that accepts.
//!
//! `getaddrinfo` cannot be cancelled, and a resolver that never answers
//! holds it for as long as `resolv.conf`'s timeouts say (10 s and more). A
//! [`Resolver`] runs each lookup through a [`Detached`] call, off the loop
//! and waited for only as long as the attempt lasts: an attempt that runs
//! out of time leaves the lookup running, and the next attempt waits for
//! that same lookup instead of starting another, so at most one lookup is
//! in flight per probe. An IP address needs no lookup.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use tokio::net::TcpStream;

use crate::readiness::detached::{Detached, Unanswered};

/// Resolves one host for one probe; clones share the lookup in flight.
#[derive(Clone)]
pub struct Resolver {
    host: String,
    port: u16,
    lookup: Detached<Result<Vec<SocketAddr>, String>>,
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

impl Resolver {
    pub fn new(host: &str, port: u16) -> Resolver {
        Resolver {
            host: host.to_owned(),
            port,
            lookup: Detached::new("resolve"),
        }
    }

    /// The host's addresses. Cancel-safe: dropped before the answer (the
    /// attempt timed out), the lookup goes on for the next call.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let (host, port) = (self.host.clone(), self.port);
        let found = self.lookup.run(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| e.to_string())
        });
        match found.await {
            Ok(found) => found,
            Err(Unanswered::NoThread(e)) => Err(format!("cannot resolve {}: {e}", self.host)),
            Err(Unanswered::Lost) => Err(format!(
                "the lookup of {} ended without an answer",
                self.host
            )),
        }
    }

    /// Connects to the first of the host's addresses that accepts. The
    /// caller bounds the whole with its timeout.
    pub async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let addresses = self.resolve().await.map_err(ConnectError::Resolve)?;
        let mut last = ConnectError::Resolve("the name resolves to no address".into());
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = ConnectError::Connect(err),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runtime;

    #[test]
    fn addresses_need_no_lookup_and_names_are_looked_up() {
        let rt = runtime();
        let found = rt.block_on(Resolver::new("::1", 80).resolve()).unwrap();
        assert_eq!(found, ["[::1]:80".parse().unwrap()]);
        let found = rt
            .block_on(Resolver::new("localhost", 8080).resolve())
            .unwrap();
        assert!(
            found
                .iter()
                .all(|a| a.port() == 8080 && a.ip().is_loopback()),
            "{found:?}"
        );
    }
}
