//! Why the webhook cannot serve, and whether that is the user's input
//! (exit status 2) or the running (exit status 1).

use std::net::SocketAddr;

use crate::webhook::tls::TlsError;

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0} (--tls-cert, --tls-key)")]
    Certificate(#[from] TlsError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr}: {source}; choose another address with --listen")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open the signal queue: {0}")]
    Signals(std::io::Error),
    #[error("cannot set up the registry client: {0}")]
    Registry(#[from] crate::registry::SetupError),
    #[error("--registry-pull-secrets on: {0}")]
    PullSecrets(String),
}

impl WebhookError {
    /// Whether the fault is in what the user gave (exit status 2) rather
    /// than in running (exit status 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            WebhookError::Certificate(_) | WebhookError::Registry(_) | WebhookError::PullSecrets(_)
        )
    }
}
