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
//! The socket lives in the abstract namespace (`@kubexit/PID/N`): nothing
//! is created on disk, so it works on read-only root filesystems and leaves
//! nothing behind. Abstract sockets are visible to every process of the
//! network namespace, that is, of the pod; the README's threat model says
//! what that allows.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;

use tokio::net::UnixDatagram;

/// A bound notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    name: String,
}

impl NotifySocket {
    /// Binds a fresh abstract socket. Needs a tokio runtime.
    pub fn bind() -> io::Result<NotifySocket> {
        let nanos = jiff::Timestamp::now().subsec_nanosecond();
        let name = format!("kubexit/{}/{nanos}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&address)?;
        socket.set_nonblocking(true)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(socket)?,
            name: format!("@{name}"),
        })
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
