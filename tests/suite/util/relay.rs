//! A recording relay between kubexit and the real API server: it ends
//! kubexit's TLS with a CA of its own (the `ca.crt` kubexit is given),
//! notes each request (method, path and query, bearer token) and the status
//! the server answered, and forwards the bytes both ways over a TLS
//! connection to the server that it verifies with the server's CA. Every
//! answer is the server's own, byte for byte; the relay decides nothing.
//!
//! What it adds is sight: the real server keeps no log of requests that a
//! test could read (`k8s/up` starts it without an audit log), and a test
//! must know when kubexit's watch is open, and how many requests kubexit
//! made, to tell a watch from polling. It can also cut every open
//! connection at once, as a network blip or a restarting server does.
//!
//! Each request is forwarded with `Connection: close`, so the server
//! closes the connection after its answer and the client opens a new one
//! for the next request: one connection, one recorded exchange.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::util::eventually;
use crate::util::loopback_tls;

/// How often a connection's thread looks up from a blocked read to see
/// whether it has been cut.
const TICK: Duration = Duration::from_millis(50);

/// One request kubexit made, and the server's answer.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// The bearer token the request carried.
    pub token: String,
    /// The status the server answered, once its answer has begun.
    pub status: Option<u16>,
    /// When the request arrived.
    pub at: Instant,
}

impl Exchange {
    pub fn is_watch(&self) -> bool {
        self.target.contains("watch=true")
    }
}

struct Shared {
    exchanges: Mutex<Vec<Exchange>>,
    /// Bumped to cut every connection open at the time.
    cuts: AtomicU64,
    closed: AtomicBool,
}

pub struct Relay {
    pub port: u16,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
}

impl Relay {
    /// Relays from a loopback port to the server at `url`
    /// (`https://127.0.0.1:PORT`), whose certificate `server_ca` signs.
    pub fn start(url: &str, server_ca: &Path) -> Relay {
        let dir = tempfile::tempdir().expect("temporary directory");
        let tls = loopback_tls::server_config(dir.path());
        let authority = url.strip_prefix("https://").expect("an https:// URL");
        let upstream: SocketAddr = authority
            .to_socket_addrs()
            .expect("the server's address")
            .next()
            .expect("an address");
        let name = ServerName::try_from(upstream.ip().to_string()).expect("server name");
        let client = loopback_tls::client_config(server_ca);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            exchanges: Mutex::new(Vec::new()),
            cuts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for tcp in listener.incoming() {
                if accepting.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let upstream = Upstream {
                    addr: upstream,
                    name: name.clone(),
                    tls: Arc::clone(&client),
                };
                let (tls, shared) = (Arc::clone(&tls), Arc::clone(&accepting));
                thread::spawn(move || {
                    let _ = relay(tcp, tls, &upstream, &shared);
                });
            }
        });
        Relay { port, dir, shared }
    }

    /// The CA kubexit must trust to talk to the relay.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Every request so far, in the order they arrived.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Waits until a watch has been answered 200 by the server: from then
    /// on, every change of the pod reaches kubexit through it.
    pub fn wait_for_open_watch(&self) {
        eventually("a watch of the pod answered by the server", || {
            self.exchanges()
                .iter()
                .any(|e| e.is_watch() && e.status == Some(200))
        });
    }

    /// Cuts every connection open now, in the middle of whatever it
    /// carries, without a TLS goodbye: the client sees its stream break.
    pub fn cut(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accepting thread, which then sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Upstream {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

type ServerSide = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;
type ClientSide = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Whether a read error only means that the tick passed.
fn is_tick(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One connection from kubexit: its one request, noted and forwarded,
/// and the server's answer copied back as it comes, until the server ends
/// it or the relay cuts it.
fn relay(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    upstream: &Upstream,
    shared: &Shared,
) -> io::Result<()> {
    let cuts = shared.cuts.load(Ordering::SeqCst);
    let cut = || shared.cuts.load(Ordering::SeqCst) != cuts;
    tcp.set_read_timeout(Some(TICK))?;
    let conn = rustls::ServerConnection::new(tls).map_err(io::Error::other)?;
    let mut client: ServerSide = rustls::StreamOwned::new(conn, tcp);

    // The request's head, and whatever of its body came with it.
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            break end + 4;
        }
        match client.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(err) if is_tick(&err) && !cut() => {}
            Err(err) => return Err(err),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut forwarded = format!("{request_line}\r\n");
    let mut token = String::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if name.eq_ignore_ascii_case("authorization") {
            let value = line[name.len() + 1..].trim();
            token = value.strip_prefix("Bearer ").unwrap_or(value).to_owned();
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let index = {
        let mut exchanges = shared.exchanges.lock().unwrap();
        exchanges.push(Exchange {
            method,
            target,
            token,
            status: None,
            at: Instant::now(),
        });
        exchanges.len() - 1
    };

    let tcp = TcpStream::connect(upstream.addr)?;
    tcp.set_read_timeout(Some(TICK))?;
    let conn = rustls::ClientConnection::new(Arc::clone(&upstream.tls), upstream.name.clone())
        .map_err(io::Error::other)?;
    let mut server: ClientSide = rustls::StreamOwned::new(conn, tcp);
    server.write_all(forwarded.as_bytes())?;
    server.write_all(&received[head_end..])?;
    server.flush()?;

    // The answer, as it comes; its status line is noted on the way.
    let mut status_line = Vec::new();
    let mut noted = false;
    loop {
        if cut() {
            let _ = client.sock.shutdown(Shutdown::Both);
            let _ = server.sock.shutdown(Shutdown::Both);
            return Ok(());
        }
        let n = match server.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if is_tick(&err) => continue,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(err) => return Err(err),
        };
        if !noted {
            status_line.extend_from_slice(&buffer[..n]);
            if let Some(end) = find(&status_line, b"\r\n") {
                let line = String::from_utf8_lossy(&status_line[..end]);
                let status = line.split(' ').nth(1).and_then(|c| c.parse().ok());
                shared.exchanges.lock().unwrap()[index].status = status;
                noted = true;
            }
        }
        client.write_all(&buffer[..n])?;
        client.flush()?;
    }
    client.conn.send_close_notify();
    client.flush()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
