//! One client connection: TLS, HTTP/1.1, and deadlines on everything a
//! client could make the server wait for.
//!
//! A connection is always in one of two phases, kept by its [`Clock`]:
//!
//! - **reading**, from its opening (the TLS handshake included) or from the
//!   first byte of a request that follows an answer, until the request is
//!   answered: it must be done within `request_timeout`. Bytes arriving
//!   slowly do not move that deadline, so a client trickling a request
//!   (slow loris) is cut off like one that sends nothing;
//! - **idle**, from an answer to the next request's first byte: a keep-alive
//!   connection is closed after `idle_timeout`, by default (120 s) longer
//!   than the API server's own idle timeout (90 s), so that the API server,
//!   not this server, is the one that closes idle connections, and never
//!   races a request against a close. An `--idle-timeout` below 90 s brings
//!   that race back: a request the API server sends as this server closes
//!   meets a closed connection.
//!
//! hyper's own header timeout is off: it runs from the end of one answer,
//! which would make the idle and the request deadline one. The read buffer
//! is capped at [`MAX_BUFFER`], which bounds request headers; bodies are
//! bounded by the server. On stop, the connection is closed once the
//! request in flight, if any, is answered.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::metrics::Open;
use super::requests::{Shared, handle};
use super::settings::Limits;

/// The largest read buffer of a connection: request headers must fit.
pub const MAX_BUFFER: usize = 64 * 1024;

/// The phase of a connection and when it began.
pub struct Clock {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the start of the phase.
    since: AtomicU64,
    idle: AtomicBool,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            since: AtomicU64::new(0),
            idle: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A request was answered: the connection waits for the next one.
    pub fn answered(&self) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.idle.store(true, Ordering::Relaxed);
    }

    /// Bytes came in: if the connection was idle, a request begins.
    fn bytes_arrived(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.since.store(self.now(), Ordering::Relaxed);
            self.idle.store(false, Ordering::Relaxed);
        }
    }

    /// When the current phase runs out, and whether it is the idle one.
    fn deadline(&self, limits: &Limits) -> (Instant, bool) {
        let idle = self.idle.load(Ordering::Relaxed);
        let limit = if idle {
            limits.idle_timeout
        } else {
            limits.request_timeout
        };
        let since = Duration::from_nanos(self.since.load(Ordering::Relaxed));
        (self.epoch + since + limit, idle)
    }
}

/// The TCP stream, telling the clock when bytes come in.
struct Timed {
    stream: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one connection until the client closes it, a deadline passes, or
/// the server stops. `_slot` is its place among the connections allowed
/// at once, given back when it ends, and its count among those open.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _slot: (OwnedSemaphorePermit, Open),
) {
    // Answers are one small write each: send them at once.
    let _ = stream.set_nodelay(true);
    let limits = shared.limits;
    let clock = Arc::new(Clock::new());
    let timed = Timed {
        stream,
        clock: Arc::clone(&clock),
    };
    let handshake = tokio::time::timeout(limits.request_timeout, acceptor.accept(timed));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            // A connection opened and closed (a port check): not a fault.
            Ok(Err(err)) if matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) => {
                tracing::debug!(peer = %peer, "{peer} closed the connection before the TLS handshake ended");
                return;
            }
            Ok(Err(err)) => {
                tracing::warn!(
                    peer = %peer,
                    "TLS handshake with {peer} failed: {err} (a client that does not trust the \
                     certificate: is the webhook configuration's caBundle the CA of --tls-cert?)"
                );
                return;
            }
            Err(_) => {
                tracing::info!(
                    peer = %peer,
                    "Closed the connection from {peer}: no TLS handshake within {:?} (--request-timeout)",
                    limits.request_timeout
                );
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };

    let service = {
        let clock = Arc::clone(&clock);
        service_fn(move |request| {
            let shared = Arc::clone(&shared);
            let clock = Arc::clone(&clock);
            async move {
                let response = handle(request, &shared, peer).await;
                clock.answered();
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(MAX_BUFFER)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let (deadline, idle) = clock.deadline(&limits);
        tokio::select! {
            done = connection.as_mut() => {
                if let Err(err) = done {
                    tracing::debug!(peer = %peer, "connection from {peer}: {err}");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                // The phase may have changed since the deadline was taken.
                if clock.deadline(&limits).0 > Instant::now() {
                    continue;
                }
                if idle {
                    tracing::debug!(peer = %peer, "Closed the idle connection from {peer}");
                } else {
                    tracing::info!(
                        peer = %peer,
                        "Closed the connection from {peer}: its request was not complete within \
                         {:?} (--request-timeout)",
                        limits.request_timeout
                    );
                }
                return;
            }
            _ = stop.wait_for(|stopping| *stopping), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
