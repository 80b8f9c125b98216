//! Quit endpoints as they are written: what `KUBEXIT_QUIT` (and the
//! `kubexit.io/quit` annotations) may say.
//!
//! An endpoint is a URL (`http://127.0.0.1:15020/quitquitquit`, `https://`
//! too with the `tls` feature), called with a POST, or with a GET when it
//! is written `GET:URL`; or the name of a preset, optionally with the port
//! (`istio`, `linkerd`, `cloud-sql-proxy:9092`, `envoy:15000`), which
//! stands for the address where that sidecar listens for it. Endpoints are
//! printed back as URLs, so the log shows what is called.
//!
//! This is vocabulary, kept apart from the calls (`quit`): the
//! configuration parses it and `kubexit inject` checks annotations with
//! it, and neither needs an HTTP client for that. It builds on the probe
//! syntax: the URL of an endpoint is an HTTP target of `readiness::probe`,
//! parsed and printed as probes are, so that hosts, ports, IPv6 brackets
//! and schemes mean the same in both settings. The presets are the
//! sidecars whose quit address kubexit knows by name.

use std::fmt;

use crate::readiness::probe::{HttpTarget, Probe};

/// The presets, with their default ports and paths.
const PRESETS: [(&str, Option<u16>, &str); 4] = [
    ("istio", Some(15020), "/quitquitquit"),
    ("linkerd", Some(4191), "/shutdown"),
    ("cloud-sql-proxy", Some(9091), "/quitquitquit"),
    // Envoy's admin port is whatever its bootstrap says: it must be given.
    ("envoy", None, "/quitquitquit"),
];

/// One quit endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub target: HttpTarget,
}

/// How an endpoint is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Get,
}

impl Method {
    /// The method as a request line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Get => "GET",
        }
    }
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
