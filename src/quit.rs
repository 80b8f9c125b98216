//! Quit endpoints: telling the sidecars nobody wraps that the work is done.
//!
//! A service mesh injects its proxy into the pod, and nobody can put
//! kubexit in front of it; in a Job, the proxy then runs forever and the
//! Job never completes. Such proxies have an endpoint that makes them exit:
//! Istio's pilot-agent `POST /quitquitquit` on port 15020, Linkerd's proxy
//! `POST /shutdown` on its admin port 4191, cloud-sql-proxy's
//! `POST /quitquitquit` on its admin port 9091 (started with
//! `--quitquitquit`), Envoy's admin `POST /quitquitquit`. With
//! `KUBEXIT_QUIT`, the main container's kubexit calls them once its child
//! has ended and its `Died` is recorded.
//!
//! Each endpoint is called on its own, all at once. A call succeeds on a
//! 2xx answer. A refused connection means nothing listens there any more:
//! that sidecar is already gone, which is what was wanted. Anything else (a
//! 5xx, a reset, no answer within a second) is tried again after a short
//! backoff (100 ms, doubling up to 1 s) until the quit timeout
//! (`KUBEXIT_QUIT_TIMEOUT`, 10 s by default) has passed. Each call's result
//! is logged. Nothing here changes kubexit's exit status: the child's work
//! is what it reports, and a sidecar that will not quit is the pod's to end.
//!
//! Endpoints are written as URLs (`http://127.0.0.1:15020/quitquitquit`,
//! `https://` too with the `tls` feature), with a `GET:` prefix for the
//! ones that want a GET, or by the name of a preset, optionally with the
//! port (`istio`, `linkerd`, `cloud-sql-proxy:9092`, `envoy:15000`).

use std::fmt;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use crate::duration::GoDuration;
use crate::readiness::probe::{self, HttpTarget, Probe};
use crate::readiness::resolve::Resolver;

/// The presets, with their default ports and paths.
const PRESETS: [(&str, Option<u16>, &str); 4] = [
    ("istio", Some(15020), "/quitquitquit"),
    ("linkerd", Some(4191), "/shutdown"),
    ("cloud-sql-proxy", Some(9091), "/quitquitquit"),
    // Envoy's admin port is whatever its bootstrap says: it must be given.
    ("envoy", None, "/quitquitquit"),
];

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// One quit endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub target: HttpTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Get,
}

/// An endpoint that cannot be used, and how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a quit endpoint; write a URL (http://127.0.0.1:15020/quitquitquit, GET:URL for a \
     GET) or a preset: istio, linkerd, cloud-sql-proxy (each with an optional :PORT), envoy:PORT"
)]
pub struct EndpointError(pub String);

impl Endpoint {
    /// Parses one endpoint, a URL or a preset.
    pub fn parse(raw: &str) -> Result<Endpoint, EndpointError> {
        let bad = || EndpointError(raw.to_owned());
        let spec = raw.trim();
        let (name, port) = match spec.split_once(':') {
            Some((name, port)) if PRESETS.iter().any(|(p, ..)| *p == name) => (
                name,
                Some(
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(bad)?,
                ),
            ),
            _ => (spec, None),
        };
        if let Some((_, default_port, path)) = PRESETS.iter().find(|(p, ..)| *p == name) {
            let port = port.or(*default_port).ok_or_else(bad)?;
            return Ok(Endpoint {
                method: Method::Post,
                target: HttpTarget {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port,
                    path: (*path).into(),
                },
            });
        }
        let (method, url) = match spec.strip_prefix("GET:") {
            Some(url) => (Method::Get, url),
            None => (Method::Post, spec),
        };
        match Probe::parse(url) {
            Ok(Probe::Http(target)) => Ok(Endpoint { method, target }),
            _ => Err(bad()),
        }
    }

    /// Parses a comma-separated list; empty entries are dropped.
    pub fn parse_list(raw: &str) -> Result<Vec<Endpoint>, EndpointError> {
        raw.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Endpoint::parse)
            .collect()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.method == Method::Get {
            f.write_str("GET:")?;
        }
        write!(f, "{}", Probe::Http(self.target.clone()))
    }
}

/// Calls every endpoint, all at once, each until it succeeds, finds its
/// sidecar gone, or `limit` has passed.
pub async fn quit_all(endpoints: &[Endpoint], limit: Duration) {
    if endpoints.is_empty() {
        return;
    }
    let deadline = Instant::now() + limit;
    let calls = endpoints
        .iter()
        .map(|endpoint| quit(endpoint, deadline, limit));
    join_all(calls).await;
}

/// Awaits every future, polling them together (the slim build has no
/// futures crate, and this is all it needs).
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

async fn quit(endpoint: &Endpoint, deadline: Instant, limit: Duration) {
    let resolver = Resolver::new(&endpoint.target.host, endpoint.target.port);
    let mut backoff = BACKOFF_FIRST;
    let mut last;
    loop {
        let attempt = timeout(CALL_TIMEOUT, call(endpoint, &resolver)).await;
        match attempt {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::info!(endpoint = %endpoint, "Quit {endpoint}: HTTP {status}");
                return;
            }
            Ok(Err(Failure::Refused)) => {
                tracing::info!(
                    endpoint = %endpoint,
                    "Quit {endpoint}: connection refused, the sidecar is already gone"
                );
                return;
            }
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(Failure::Other(reason))) => last = reason,
            Err(_) => last = format!("no answer within {}", GoDuration(CALL_TIMEOUT)),
        }
        if Instant::now() + backoff >= deadline {
            break;
        }
        tracing::debug!(endpoint = %endpoint, "Quit {endpoint}: {last}; trying again");
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
    tracing::warn!(
        endpoint = %endpoint,
        "Quit {endpoint} failed for {}: {last}; the sidecar may keep the pod running",
        GoDuration(limit)
    );
}

enum Failure {
    Refused,
    Other(String),
}

/// One call: the status code of the answer.
async fn call(endpoint: &Endpoint, resolver: &Resolver) -> Result<u16, Failure> {
    let target = &endpoint.target;
    let method = match endpoint.method {
        Method::Post => "POST",
        Method::Get => "GET",
    };
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: kubexit\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
        target.path,
        probe::bracketed(&target.host),
        target.port
    );
    let stream = match probe::connect(resolver).await {
        Ok(stream) => stream,
        Err(err) if err.is_refused() => return Err(Failure::Refused),
        Err(err) => return Err(Failure::Other(err.to_string())),
    };
    let line = probe::exchange(stream, target, &request)
        .await
        .map_err(Failure::Other)?;
    probe::status_code(&line).ok_or_else(|| {
        Failure::Other(if line.is_empty() {
            "the connection closed without an answer".into()
        } else {
            format!("not an HTTP answer: {line:?}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_urls_parse_and_print() {
        let parsed = Endpoint::parse_list(
            "istio, linkerd,cloud-sql-proxy:9092, envoy:15000, GET:http://127.0.0.1:8080/quit",
        )
        .unwrap();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "http://127.0.0.1:15020/quitquitquit",
                "http://127.0.0.1:4191/shutdown",
                "http://127.0.0.1:9092/quitquitquit",
                "http://127.0.0.1:15000/quitquitquit",
                "GET:http://127.0.0.1:8080/quit",
            ]
        );
        assert_eq!(parsed[0].method, Method::Post);
    }

    #[test]
    fn envoy_needs_its_port_and_other_words_are_refused() {
        for bad in [
            "envoy",
            "istio:x",
            "ftp://host/x",
            "quitquitquit",
            "GET:",
            "tcp://a:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
