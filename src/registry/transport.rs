//! HTTP to registries: TLS against the trusted CAs, plain HTTP only to the
//! registries named insecure, a deadline on every exchange, bodies bounded
//! in size, redirects followed.
//!
//! One client serves every resolution and keeps idle connections for
//! reuse (HTTP/1.1 keep-alive), so that the requests of one lookup share a
//! TLS handshake. Each exchange (connection, request, the whole answer)
//! ends within the shorter of the per-call timeout and what is left of the
//! lookup's budget: a registry that accepts a connection and never
//! answers costs at most that. A redirect (registries send blob downloads
//! to storage elsewhere) is followed up to five times; the
//! `Authorization` header goes only to the origin it was meant for, and a
//! redirect to plain HTTP is refused unless that host is named insecure.
//!
//! The trusted CAs are the system's store, or, as OpenSSL and Go read
//! them, the bundle in `SSL_CERT_FILE` and the directories in
//! `SSL_CERT_DIR` instead; plus any CA files the caller names. A refusal
//! for a certificate says how many CAs were trusted and how to trust
//! another.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderMap, LOCATION, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::Failure;

/// How many redirects one request follows.
const MOST_REDIRECTS: usize = 5;
/// How long an idle connection is kept for the next request.
const IDLE: Duration = Duration::from_secs(30);

/// Why the resolver cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the trusted CA certificates {what}: {why}")]
    Roots { what: String, why: String },
    #[error(
        "{} holds no CA certificate in PEM (-----BEGIN CERTIFICATE-----)",
        .path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Which CA certificates a registry's certificate must chain to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// A PEM bundle used instead of the system's store (`SSL_CERT_FILE`).
    pub cert_file: Option<PathBuf>,
    /// Directories of PEM files used instead of the system's store
    /// (`SSL_CERT_DIR`, colon-separated).
    pub cert_dirs: Vec<PathBuf>,
    /// PEM files of CAs trusted besides (a private registry's CA).
    pub ca_files: Vec<PathBuf>,
}

impl Trust {
    /// The system's store, or what `SSL_CERT_FILE` and `SSL_CERT_DIR` of
    /// this process say instead.
    pub fn from_env() -> Trust {
        Trust::from_env_with(|name| std::env::var_os(name))
    }

    /// [`Trust::from_env`], with the environment given by `env`.
    pub fn from_env_with(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Trust {
        let cert_file = env("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let cert_dirs = env("SSL_CERT_DIR")
            .map(|dirs| {
                std::env::split_paths(&dirs)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Trust {
            cert_file,
            cert_dirs,
            ca_files: Vec::new(),
        }
    }

    /// The certificates, and where they came from (for messages).
    fn roots(&self) -> Result<(rustls::RootCertStore, String), SetupError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let mut roots = rustls::RootCertStore::empty();
        let mut from = Vec::new();
        if self.cert_file.is_some() || !self.cert_dirs.is_empty() {
            let mut dirs = self.cert_dirs.iter().map(Some).collect::<Vec<_>>();
            if dirs.is_empty() {
                dirs.push(None);
            }
            for (i, dir) in dirs.into_iter().enumerate() {
                let file = if i == 0 {
                    self.cert_file.as_deref()
                } else {
                    None
                };
                let loaded =
                    rustls_native_certs::load_certs_from_paths(file, dir.map(|d| d.as_path()));
                if let Some(err) = loaded.errors.first() {
                    return Err(SetupError::Roots {
                        what: "of SSL_CERT_FILE or SSL_CERT_DIR".into(),
                        why: err.to_string(),
                    });
                }
                roots.add_parsable_certificates(loaded.certs);
            }
            if let Some(file) = &self.cert_file {
                from.push(format!("SSL_CERT_FILE={}", file.display()));
            }
            if !self.cert_dirs.is_empty() {
                from.push("SSL_CERT_DIR".to_owned());
            }
        } else {
            // The system's store: a broken file in it is the system's
            // business, and what it holds besides is still used.
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            from.push("the system's store".to_owned());
        }
        for path in &self.ca_files {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| SetupError::Roots {
                    what: format!("in {}", path.display()),
                    why: e.to_string(),
                })?
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(SetupError::NoCertificate { path: path.clone() });
            }
            let (_, ignored) = roots.add_parsable_certificates(certs);
            if ignored > 0 {
                return Err(SetupError::Roots {
                    what: format!("in {}", path.display()),
                    why: format!("{ignored} of them cannot be used as a CA"),
                });
            }
            from.push(path.display().to_string());
        }
        let said = format!("{} CA certificates, from {}", roots.len(), from.join(", "));
        Ok((roots, said))
    }
}

/// A URL of a registry, a token service or a redirect's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `HOST[:PORT]`, lowercased.
    pub authority: String,
    /// `/PATH[?QUERY]`.
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{text:?} names no host, or a user in it"));
        }
        Ok(Url {
            https,
            authority: authority.to_ascii_lowercase(),
            path,
        })
    }

    /// Where a `Location` header leads from here.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!(
                "{}://{rest}",
                if self.https { "https" } else { "http" }
            ))
        } else if location.starts_with('/') {
            Ok(Url {
                path: location.to_owned(),
                ..self.clone()
            })
        } else {
            let path = self.path.split('?').next().unwrap_or_default();
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            Ok(Url {
                path: format!("{dir}{location}"),
                ..self.clone()
            })
        }
    }

    fn same_origin(&self, other: &Url) -> bool {
        self.https == other.https && self.authority == other.authority
    }

    /// The request's line for messages: the path without its query, which
    /// may carry a signature or a scope nobody needs to read.
    fn shown(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        if path.starts_with("/v2/") {
            path.to_owned()
        } else {
            format!(
                "{}://{}{path}",
                if self.https { "https" } else { "http" },
                self.authority
            )
        }
    }

    fn to_uri(&self) -> Result<Uri, String> {
        let text = format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path
        );
        text.parse::<Uri>().map_err(|e| format!("{text:?}: {e}"))
    }
}

/// One request.
pub struct Outgoing<'a> {
    pub method: Method,
    pub url: Url,
    pub accept: Option<&'a str>,
    /// Sent to `url`'s origin only, never after a redirect elsewhere.
    pub authorization: Option<&'a str>,
    /// The most the answer's body may weigh.
    pub limit: usize,
}

/// One answer.
#[derive(Debug)]
pub struct Incoming {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Who answered (after redirects) and to what, for messages.
    pub host: String,
    pub request: String,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    insecure: Vec<String>,
    per_call: Duration,
    budget: Duration,
    /// How many CAs are trusted, and from where, for refusals.
    trusted: String,
}

impl Transport {
    pub fn new(
        trust: &Trust,
        insecure: &[String],
        per_call: Duration,
        budget: Duration,
    ) -> Result<Transport, SetupError> {
        let (roots, trusted) = trust.roots()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(per_call));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(8)
            .build(https);
        Ok(Transport {
            client,
            insecure: insecure.iter().map(|r| r.to_ascii_lowercase()).collect(),
            per_call,
            budget,
            trusted,
        })
    }

    /// Whether `authority` (`HOST[:PORT]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, authority: &str) -> bool {
        self.insecure
            .iter()
            .any(|r| r.eq_ignore_ascii_case(authority))
    }

    /// Sends `out` and reads the whole answer, following redirects, by
    /// `deadline` at the latest.
    pub async fn exchange(
        &self,
        out: &Outgoing<'_>,
        deadline: Instant,
    ) -> Result<Incoming, Failure> {
        let mut url = out.url.clone();
        for _ in 0..=MOST_REDIRECTS {
            if !url.https && !self.is_insecure(&url.authority) {
                return Err(Failure::Unreachable {
                    registry: url.authority.clone(),
                    why: format!(
                        "{} is plain HTTP, which kubexit speaks only to registries named insecure",
                        url.shown()
                    ),
                });
            }
            let request_line = format!("{} {}", out.method, url.shown());
            let uri = url.to_uri().map_err(|why| Failure::Unreachable {
                registry: url.authority.clone(),
                why,
            })?;
            let mut request = Request::builder()
                .method(out.method.clone())
                .uri(uri)
                .header(USER_AGENT, concat!("kubexit/", env!("CARGO_PKG_VERSION")));
            if let Some(accept) = out.accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = out.authorization
                && url.same_origin(&out.url)
            {
                request = request.header(AUTHORIZATION, authorization);
            }
            let request =
                request
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| Failure::Unreachable {
                        registry: url.authority.clone(),
                        why: format!("cannot make the request {request_line}: {e}"),
                    })?;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = self.per_call.min(left);
            let attempt = async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| self.unreachable(&url, &e))?;
                let (parts, body) = response.into_parts();
                if parts.status.is_redirection() {
                    return Ok((parts, Bytes::new()));
                }
                let body = Limited::new(body, out.limit)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            Failure::Content {
                                what: format!("the answer of {} to {request_line}", url.authority),
                                why: format!("it is larger than {} bytes", out.limit),
                            }
                        } else {
                            Failure::Unreachable {
                                registry: url.authority.clone(),
                                why: format!(
                                    "the answer to {request_line} broke off: {}",
                                    chain(&*e)
                                ),
                            }
                        }
                    })?
                    .to_bytes();
                Ok((parts, body))
            };
            let (parts, body) = match tokio::time::timeout(limit, attempt).await {
                Ok(done) => done?,
                Err(_) => {
                    return Err(Failure::Timeout {
                        registry: url.authority.clone(),
                        request: request_line,
                        per_call: self.per_call,
                        budget: self.budget,
                        by_budget: left < self.per_call,
                    });
                }
            };
            if parts.status.is_redirection()
                && let Some(location) = parts.headers.get(LOCATION).and_then(|l| l.to_str().ok())
            {
                url = url.join(location).map_err(|why| Failure::Unreachable {
                    registry: url.authority.clone(),
                    why: format!("{request_line} was redirected to {why}"),
                })?;
                continue;
            }
            return Ok(Incoming {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                host: url.authority.clone(),
                request: request_line,
            });
        }
        Err(Failure::Unreachable {
            registry: out.url.authority.clone(),
            why: format!(
                "{} {} was redirected more than {MOST_REDIRECTS} times",
                out.method,
                out.url.shown()
            ),
        })
    }

    fn unreachable(&self, url: &Url, err: &hyper_util::client::legacy::Error) -> Failure {
        // The client's own words ("client error (Connect)") say less than
        // their causes.
        let mut why = match err.source() {
            Some(cause) => chain(cause),
            None => err.to_string(),
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
        let mut tls = None;
        while let Some(e) = source {
            tls = tls.or_else(|| tls_error(e));
            source = e.source();
        }
        match tls {
            Some(rustls::Error::InvalidCertificate(_)) => why.push_str(&format!(
                "; kubexit trusts {}: trust the registry's CA with SSL_CERT_FILE (a PEM bundle \
                 of the CAs to trust, the registry's among them)",
                self.trusted
            )),
            Some(rustls::Error::InvalidMessage(_)) if url.https => why.push_str(
                "; if the registry serves plain HTTP there, name it insecure \
                 (--insecure-registries)",
            ),
            _ => {}
        }
        Failure::Unreachable {
            registry: url.authority.clone(),
            why,
        }
    }
}

/// The TLS error in `err`, which hyper-rustls and tokio-rustls hand on
/// inside `io::Error`s, one within the other (whose `source` skips them).
fn tls_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    tls_error(inner)
}

/// An error and its causes, each said once.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        current = e.source();
    }
    said.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_parts_and_redirects_resolve_against_them() {
        let url = Url::parse("https://Registry.Example.com:5000/v2/a/blobs/x?y=1").unwrap();
        assert_eq!(url.authority, "registry.example.com:5000");
        assert_eq!(url.path, "/v2/a/blobs/x?y=1");
        assert_eq!(url.shown(), "/v2/a/blobs/x");
        let cdn = url.join("https://cdn.example.net/blob?sig=s").unwrap();
        assert_eq!(
            (cdn.authority.as_str(), cdn.shown()),
            ("cdn.example.net", "https://cdn.example.net/blob".to_owned())
        );
        assert!(!cdn.same_origin(&url));
        assert_eq!(url.join("/other").unwrap().path, "/other");
        assert_eq!(url.join("z").unwrap().path, "/v2/a/blobs/z");
        assert!(url.join("//h.io/p").unwrap().https);
        assert_eq!(Url::parse("http://h:1?x").unwrap().path, "/?x");
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("https://u:p@h/").is_err());
    }

    #[test]
    fn trust_follows_ssl_cert_file_and_ssl_cert_dir() {
        let trust = Trust::from_env_with(|name| match name {
            "SSL_CERT_FILE" => Some("/x/ca.pem".into()),
            "SSL_CERT_DIR" => Some("/a:/b".into()),
            _ => None,
        });
        assert_eq!(trust.cert_file, Some(PathBuf::from("/x/ca.pem")));
        assert_eq!(trust.cert_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(Trust::from_env_with(|_| None), Trust::default());
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_refused_at_setup() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let named = |trust: Trust| {
            Transport::new(&trust, &[], Duration::from_secs(1), Duration::from_secs(1))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let err = named(Trust {
            ca_files: vec![empty.clone()],
            ..Trust::default()
        });
        assert!(
            err.contains("empty.pem") && err.contains("no CA certificate"),
            "{err}"
        );
        let err = named(Trust {
            cert_file: Some(dir.path().join("missing.pem")),
            ..Trust::default()
        });
        assert!(err.contains("SSL_CERT_FILE"), "{err}");
    }
}
