//! The webhook's certificate: read from two PEM files, served to every
//! TLS handshake, and read again whenever the files change.
//!
//! cert-manager renews a certificate by rewriting its Secret; the kubelet
//! then swaps the files of the mounted volume in one rename (the `..data`
//! symbolic link of a Secret volume). [`watch`] follows the directories
//! that hold the two files (as given, and as their links resolve) with
//! inotify, and on any change, once the writes have settled for a moment,
//! reads both files again. A pair that reads well and matches replaces the
//! one served, for every handshake from then on; connections already open
//! keep theirs, so nothing in flight is dropped. A pair that does not (a
//! certificate written before its key, a file half-copied) is said in the
//! log and the previous pair stays in service until a good one appears.
//! Where inotify cannot be used, the files are read again every ten
//! seconds instead. SIGHUP also reads them again (the server's business).
//!
//! Only the ring provider is used, as by the rest of kubexit; TLS 1.2 and
//! 1.3, and ALPN `http/1.1`, the one protocol the server speaks.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use inotify::{Inotify, WatchMask};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::unix::AsyncFd;

use super::metrics::Metrics;

/// How long the files must be quiet after a change before they are read:
/// a certificate and its key copied one after the other are read as a
/// pair.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the files are read without inotify.
const POLL: Duration = Duration::from_secs(10);

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no certificate in PEM (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no private key in PEM (-----BEGIN PRIVATE KEY-----, RSA or EC): {why}")]
    NoKey { path: PathBuf, why: String },
    #[error("the private key in {key} cannot be used: {why}")]
    BadKey { key: PathBuf, why: String },
    #[error("the private key in {key} is not the key of the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The certificate served, and where it comes from.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' bytes, to tell a real change from a touch.
    files: (Vec<u8>, Vec<u8>),
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl Certificates {
    /// Reads the pair for the first time.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_pair(cert_path, key_path)?;
        let key = certified(&files, cert_path, key_path, &provider)?;
        Ok(Arc::new(Certificates {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Loaded {
                key: Arc::new(key),
                files,
            }),
        }))
    }

    /// Reads the files again; `Ok(true)` when a new pair is now served,
    /// `Ok(false)` when they have not changed. On an error the pair served
    /// stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_pair(&self.cert_path, &self.key_path)?;
        if self.current.read().is_ok_and(|c| c.files == files) {
            return Ok(false);
        }
        let key = certified(&files, &self.cert_path, &self.key_path, &self.provider)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Loaded {
            key: Arc::new(key),
            files,
        };
        Ok(true)
    }

    /// Reads the files again and says what came of it in the log, and in
    /// `metrics` when the files had changed.
    pub fn reload_and_log(&self, metrics: &Metrics) {
        match self.reload() {
            Ok(true) => {
                metrics.reloaded(true);
                tracing::info!(
                cert = %self.cert_path.display(),
                key = %self.key_path.display(),
                    "Serving the new certificate of {}",
                    self.cert_path.display()
                )
            }
            Ok(false) => {}
            Err(err) => {
                metrics.reloaded(false);
                tracing::warn!(
                    "{err}; still serving the certificate read before (fix the files, or wait for \
                     their writer to finish)"
                )
            }
        }
    }

    /// The TLS configuration of the server: every handshake asks this for
    /// the pair it serves.
    pub fn server_config(self: &Arc<Certificates>) -> Result<rustls::ServerConfig, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate,
        // so a client could go on past a renewal with the old one; the API
        // server (Go, without a session cache) never resumes anyway, and the
        // cache would only cost memory.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// The directories where a change of either file shows: each file's
    /// own, and the one its symbolic links lead to.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in [&self.cert_path, &self.key_path] {
            let resolved = std::fs::canonicalize(path).ok();
            for file in [Some(path.clone()), resolved].into_iter().flatten() {
                let dir = match file.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                    _ => PathBuf::from("."),
                };
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(&current.key))
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified(
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        why: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        other => TlsError::BadKey {
            key: key_path.to_owned(),
            why: other.to_string(),
        },
    })
}

/// Follows the files for as long as the server runs, reading them again
/// after each change.
pub async fn watch(certificates: Arc<Certificates>, metrics: Arc<Metrics>) {
    let dirs = certificates.directories();
    let mut events = match Events::open(&dirs) {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!(
                "cannot watch {} with inotify ({err}); reading the certificate files every {}s \
                 instead",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                POLL.as_secs()
            );
            loop {
                tokio::time::sleep(POLL).await;
                certificates.reload_and_log(&metrics);
            }
        }
    };
    loop {
        if let Err(err) = events.changed().await {
            tracing::warn!(
                "cannot read inotify events ({err}); reading the certificate files every {}s \
                 instead",
                POLL.as_secs()
            );
            loop {
                tokio::time::sleep(POLL).await;
                certificates.reload_and_log(&metrics);
            }
        }
        // Until the writes settle: a burst of events is one change.
        while let Ok(Ok(())) = tokio::time::timeout(SETTLE, events.changed()).await {}
        certificates.reload_and_log(&metrics);
    }
}

/// inotify on the directories of the files.
struct Events {
    fd: AsyncFd<Inotify>,
    buffer: Vec<u8>,
}

impl Events {
    fn open(dirs: &[PathBuf]) -> io::Result<Events> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::ATTRIB
            | WatchMask::ONLYDIR;
        for dir in dirs {
            inotify.watches().add(dir, mask)?;
        }
        // SAFETY: the Inotify value owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(inotify) }.map_err(io::Error::from)?;
        Ok(Events {
            fd,
            buffer: vec![0; 4096],
        })
    }

    /// Waits for at least one event in the directories, and reads them all.
    async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            match guard.get_inner_mut().read_events(&mut self.buffer) {
                Ok(mut events) => {
                    if events.next().is_some() {
                        return Ok(());
                    }
                    guard.clear_ready();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(err) => return Err(err),
            }
        }
    }
}
