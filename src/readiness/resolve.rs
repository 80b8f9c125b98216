//! Name resolution for probes, bounded.
//!
//! `getaddrinfo` cannot be cancelled, and a resolver that never answers
//! holds it for as long as `resolv.conf`'s timeouts say (10 s and more).
//! Run inside the event loop's blocking pool, such a lookup would outlive
//! the probe attempt that asked for it, one more at every attempt, and the
//! runtime would wait for all of them before kubexit could exit.
//!
//! So a [`Resolver`] runs each lookup in a detached thread of its own and
//! waits for its answer only as long as the probe attempt lasts. An attempt
//! that runs out of time leaves the lookup running, and the next attempt
//! waits for that same lookup instead of starting another: at most one
//! lookup is in flight per probe. Nothing ever joins the thread, so
//! kubexit's exit never waits for a lookup. An IP address needs no lookup.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;

use tokio::sync::watch;

type Lookup = Option<Result<Vec<SocketAddr>, String>>;

/// Resolves one host for one probe; clones share the lookup in flight.
#[derive(Clone)]
pub struct Resolver {
    host: String,
    port: u16,
    in_flight: Rc<RefCell<Option<watch::Receiver<Lookup>>>>,
}

impl Resolver {
    pub fn new(host: &str, port: u16) -> Resolver {
        Resolver {
            host: host.to_owned(),
            port,
            in_flight: Rc::default(),
        }
    }

    /// The host's addresses. Cancel-safe: dropped before the answer (the
    /// attempt timed out), the lookup goes on for the next call.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let mut answer = {
            let mut in_flight = self.in_flight.borrow_mut();
            match &*in_flight {
                Some(answer) => answer.clone(),
                None => {
                    let answer = self
                        .start()
                        .map_err(|e| format!("cannot resolve {}: {e}", self.host))?;
                    *in_flight = Some(answer.clone());
                    answer
                }
            }
        };
        let result = match answer.wait_for(Option::is_some).await {
            Ok(found) => found.clone().unwrap_or_else(|| Err("no answer".into())),
            Err(_) => Err(format!(
                "the lookup of {} ended without an answer",
                self.host
            )),
        };
        // This lookup is spent; the next attempt asks afresh.
        *self.in_flight.borrow_mut() = None;
        result
    }

    fn start(&self) -> io::Result<watch::Receiver<Lookup>> {
        let (tell, answer) = watch::channel(None);
        let (host, port) = (self.host.clone(), self.port);
        std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let found = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .map_err(|e| e.to_string());
                let _ = tell.send(Some(found));
            })?;
        Ok(answer)
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
