//! The server: the listening socket, the connections it accepts (at most
//! `--max-connections`, each served by `connection`), and the stop.
//!
//! The stop, on SIGTERM or SIGINT: `/readyz` fails at once; after
//! `--shutdown-delay` (0 by default; a second signal cuts it short) the
//! listening socket is closed, every connection is told to close once its
//! request in flight is answered, and [`serve`] returns when all have
//! closed, or when the longest a request may take has passed. SIGHUP reads
//! the certificate files again. Every other signal kubexit receives is
//! ignored (all but SIGKILL, SIGSTOP and the faults such as SIGSEGV, which
//! keep the kernel's action).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::connection;
use super::error::WebhookError;
use super::metrics::Metrics;
use super::pull_secrets::PullSecrets;
use super::requests::{INJECT_PATH, Shared};
use super::settings::Settings;
use super::tls::{self, Certificates};
use crate::process::signals::Signals;
use crate::registry::Resolver;

/// Serves until a stop signal, then stops as the module says.
pub async fn serve(
    settings: &Settings,
    certificates: Arc<Certificates>,
    signals: &Signals,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(Arc::new(certificates.server_config()?));
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| WebhookError::Listen {
                addr: settings.listen,
                source,
            })?;
    let address = listener.local_addr().unwrap_or(settings.listen);
    let limits = settings.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let metrics = Arc::new(Metrics::default());
    let resolver = match &settings.registry {
        Some(lookup) => Some(Resolver::new(
            lookup.settings.clone(),
            lookup.keyring.clone(),
        )?),
        None => None,
    };
    let pull_secrets = match &settings.registry {
        Some(lookup) if lookup.pull_secrets => Some((
            PullSecrets::connect()
                .await
                .map_err(WebhookError::PullSecrets)?,
            lookup.keyring.clone(),
        )),
        _ => None,
    };
    let shared = Arc::new(Shared::new(
        settings.options.clone(),
        limits,
        Arc::clone(&metrics),
        resolver,
        pull_secrets,
    ));
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(tls::watch(Arc::clone(&certificates), Arc::clone(&metrics)));
    tracing::info!(
        address = %address,
        "Serving admission reviews on https://{address}{INJECT_PATH}"
    );

    let mut stop_at: Option<Instant> = None;
    loop {
        let next = async {
            let slot = Arc::clone(&slots).acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            received = signals.recv() => {
                let received = match received {
                    Ok(received) => received,
                    Err(err) => {
                        tracing::error!("cannot read signals: {err}; stopping");
                        break;
                    }
                };
                let mut now = false;
                for signal in received.iter().filter(|r| !r.is_own()).filter_map(|r| r.signal.known()) {
                    match signal {
                        Signal::SIGTERM | Signal::SIGINT => {
                            if stop_at.is_some() {
                                now = true;
                            } else {
                                shared.ready.store(false, Ordering::Relaxed);
                                stop_at = Some(Instant::now() + settings.shutdown_delay);
                                if settings.shutdown_delay.is_zero() {
                                    tracing::info!("Received {signal}: stopping");
                                } else {
                                    tracing::info!(
                                        "Received {signal}: /readyz fails from now on; stopping in {:?} \
                                         (--shutdown-delay)",
                                        settings.shutdown_delay
                                    );
                                }
                            }
                        }
                        Signal::SIGHUP => certificates.reload_and_log(&metrics),
                        _ => {}
                    }
                }
                if now || settings.shutdown_delay.is_zero() && stop_at.is_some() {
                    break;
                }
            }
            (slot, accepted) = next => match (slot, accepted) {
                (Ok(slot), Ok((stream, peer))) => {
                    tokio::spawn(connection::serve(
                        stream,
                        peer,
                        acceptor.clone(),
                        Arc::clone(&shared),
                        stopping.clone(),
                        (slot, metrics.opened()),
                    ));
                }
                (Ok(_), Err(err)) => {
                    // Out of file descriptors, say: a pause instead of a spin.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (Err(_), _) => {
                    // Never closed; were it ever, serving could not go on.
                    tracing::error!("the connection slots are gone; stopping");
                    break;
                }
            },
            _ = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => break,
        }
    }

    // No connection is accepted from here on: the port is closed.
    drop(listener);
    shared.ready.store(false, Ordering::Relaxed);
    let open = limits.max_connections - slots.available_permits();
    tracing::info!(
        connections = open,
        "Stopping: no new connections; answering the reviews in flight ({open} connection(s) open)"
    );
    let _ = stop.send(true);
    // Every slot back means every connection has closed. None can take
    // longer than a request may; a second more for the answers to go out.
    let every_slot = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let wait = limits.request_timeout + Duration::from_secs(1);
    match tokio::time::timeout(wait, slots.acquire_many(every_slot)).await {
        Ok(_) => tracing::info!("Stopped: every review answered"),
        Err(_) => tracing::warn!(
            "Stopped with {} connection(s) still open after {wait:?}",
            limits.max_connections - slots.available_permits()
        ),
    }
    Ok(())
}
