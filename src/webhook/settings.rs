//! What the server is given: the address, the certificate, the options of
//! the injection, and what one client may cost, checked by the command
//! line (`cli::webhook`) before the server starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::inject::Options;
use crate::registry::{self, Keyring};

/// Everything the server needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// What `kubexit inject` would be given: the default image.
    pub options: Options,
    pub limits: Limits,
    /// How long, after SIGTERM, the server goes on accepting connections
    /// while `/readyz` fails, so that the Service stops sending it new ones.
    pub shutdown_delay: Duration,
    /// How images of containers without `command` are read; `None`:
    /// they are not (`--registry-lookup off`).
    pub registry: Option<Lookup>,
}

/// How the webhook reads images from their registries.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub settings: registry::Settings,
    /// The credentials of `--registry-auth-file`.
    pub keyring: Keyring,
    /// Whether the pod's pull secrets and its ServiceAccount's are read
    /// from the Kubernetes API too, ahead of `keyring`
    /// (`--registry-pull-secrets on`).
    pub pull_secrets: bool,
}

/// What one client may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body read.
    pub max_request_bytes: usize,
    /// From a request's first byte (or a connection's opening) to its
    /// body's last: longer, and the connection is closed.
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listening socket's queue.
    pub max_connections: usize,
}

impl Limits {
    /// Request bodies held in memory at once, all connections together:
    /// four of the largest. Reviews are a few kilobytes, so hundreds fit;
    /// a flood of large bodies waits (within its deadline) instead of
    /// growing the memory.
    pub fn body_budget(&self) -> usize {
        self.max_request_bytes.saturating_mul(4)
    }
}
