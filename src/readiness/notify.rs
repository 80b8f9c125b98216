//! The notify socket: readiness announced by the child itself.
//!
//! Daemons built for systemd (cloud-sql-proxy among them) tell their
//! supervisor they are ready by sending a datagram `READY=1` to the socket
//! named in `$NOTIFY_SOCKET`. With `KUBEXIT_READY_PROBE=notify`, kubexit
//! binds such a socket before starting the child and passes its name in the
//! child's environment; the first datagram with a `READY=1` line makes the
//! child ready. `STATUS=…` lines are logged, as systemd shows them; other
//! lines (`MAINPID=…`, `WATCHDOG=1`) are ignored.
//!
//! The socket lives in the abstract namespace (`@kubexit/` and 64 random
//! bits): nothing is created on disk, so it works on read-only root
//! filesystems and leaves nothing behind. Abstract sockets are visible to
//! every process of the network namespace, that is, of the pod, where every
//! kubexit may be PID 1: so the name is drawn at random, never made of a
//! pid, and a name already taken is passed over for another (16 times at
//! most; then the bind's error is kubexit's). The threat
//! model (docs/threat-model.md) says what the sharing allows.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;

use tokio::net::UnixDatagram;

use crate::random;

/// A bound notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    name: String,
}

impl NotifySocket {
    /// Binds a fresh abstract socket. Needs a tokio runtime.
    pub fn bind() -> io::Result<NotifySocket> {
        let mut tries = 0;
        loop {
            let name = format!("kubexit/{:016x}", random::u64());
            let address = SocketAddr::from_abstract_name(name.as_bytes())?;
            let socket = match std::os::unix::net::UnixDatagram::bind_addr(&address) {
                Ok(socket) => socket,
                Err(err) if err.kind() == io::ErrorKind::AddrInUse && tries < 16 => {
                    tries += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            socket.set_nonblocking(true)?;
            return Ok(NotifySocket {
                socket: UnixDatagram::from_std(socket)?,
                name: format!("@{name}"),
            });
        }
    }

    /// The value of `NOTIFY_SOCKET` for the child.
    pub fn env_value(&self) -> &str {
        &self.name
    }

    /// Waits for a datagram announcing readiness.
    pub async fn ready(&self) -> io::Result<()> {
        let mut buffer = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buffer).await?;
            let message = String::from_utf8_lossy(&buffer[..n]);
            let mut ready = false;
            for line in message.lines() {
                if let Some(status) = line.strip_prefix("STATUS=") {
                    tracing::info!("Child status: {status}");
                }
                ready |= line.trim() == "READY=1";
            }
            if ready {
                return Ok(());
            }
        }
    }
}
