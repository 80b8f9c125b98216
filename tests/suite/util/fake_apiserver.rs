//! A fake Kubernetes API server for one pod, kept for the faults the real
//! one (`util/k8s.rs`) cannot be made to show on demand: a watch that the
//! server ends early and cleanly (the real one does so at a timeout of its
//! choosing, minutes away), `410 Gone` for a version it no longer keeps (the
//! real one keeps far more history than a test can outrun), a `404` for the
//! list (the real one answers a list in a missing namespace with an empty
//! list), and listening on `::1` (`k8s/up` binds the real one to 127.0.0.1,
//! with no `::1` in its certificate). Each test that uses it says which.
//!
//! It speaks the real wire format over HTTPS: `GET
//! /api/v1/namespaces/NS/pods?fieldSelector=...` answers a `PodList` with a
//! `resourceVersion`; the same with `watch=true` streams chunked JSON lines
//! (`{"type":"MODIFIED","object":{...}}`) from the requested version on.
//! Failures are `Status` objects, as the real server sends them, and an
//! expired version gets a `410 Gone` ERROR event. Its CA and certificate are
//! made fresh (`util/loopback_tls.rs`), and it checks the bearer token, so
//! the client's TLS and authentication are exercised for real.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::Kubexit;
use crate::util::cluster_pod::{self, Container, POD};
use crate::util::loopback_tls;

pub const NAMESPACE: &str = "batch";
const TOKEN: &str = "test-service-account-token";

/// The pod in namespace `NAMESPACE`, with these containers.
pub fn pod(containers: &[(&str, Container)]) -> Value {
    cluster_pod::pod(NAMESPACE, containers, &[])
}

struct State {
    pod: Option<Value>,
    version: u64,
    /// Watch events, each with the version it brought the pod to.
    history: Vec<(u64, Value)>,
    /// Versions below this are expired: watching from them gets 410.
    compacted: u64,
    /// Bumped to end every open watch.
    generation: u64,
    /// When set, every request gets this error status.
    refuse: Option<u16>,
    requests: Vec<String>,
}

pub struct ApiServer {
    pub port: u16,
    host: &'static str,
    account: tempfile::TempDir,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl ApiServer {
    /// Serves `pod` (or no pod) on 127.0.0.1.
    pub fn start(pod: Option<Value>) -> ApiServer {
        ApiServer::start_on("127.0.0.1", pod)
    }

    /// Serves on the given loopback address: `127.0.0.1` or `::1`.
    pub fn start_on(host: &'static str, pod: Option<Value>) -> ApiServer {
        let account = tempfile::tempdir().expect("temporary directory");
        // The CA goes where the service account's ca.crt does.
        let tls = loopback_tls::server_config(account.path());
        fs::write(account.path().join("token"), TOKEN).unwrap();
        fs::write(account.path().join("namespace"), NAMESPACE).unwrap();
        let listener = TcpListener::bind((host, 0)).expect("bind the API server");
        let port = listener.local_addr().unwrap().port();
        let mut state = State {
            pod: None,
            version: 1,
            history: Vec::new(),
            compacted: 0,
            generation: 0,
            refuse: None,
            requests: Vec::new(),
        };
        if let Some(pod) = pod {
            state.pod = Some(versioned(pod, 1));
        }
        let shared = Arc::new((Mutex::new(state), Condvar::new()));
        let serving = Arc::clone(&shared);
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let tls = Arc::clone(&tls);
                let shared = Arc::clone(&serving);
                thread::spawn(move || serve(tcp, tls, shared));
            }
        });
        ApiServer {
            port,
            host,
            account,
            shared,
        }
    }

    /// Points a kubexit at this server in API mode.
    pub fn configure(&self, kubexit: &mut Kubexit) {
        kubexit
            .env("KUBERNETES_SERVICE_HOST", self.host)
            .env("KUBERNETES_SERVICE_PORT", self.port.to_string())
            .env("KUBEXIT_SERVICE_ACCOUNT_DIR", self.account.path())
            .env("KUBEXIT_POD_NAME", POD);
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        let (lock, wake) = &*self.shared;
        f(&mut lock.lock().unwrap());
        wake.notify_all();
    }

    /// Replaces the pod, announcing it to watches as MODIFIED.
    pub fn update(&self, pod: Value) {
        self.change(|s| {
            s.version += 1;
            let pod = versioned(pod, s.version);
            s.history
                .push((s.version, json!({"type": "MODIFIED", "object": pod})));
            s.pod = Some(pod);
        });
    }

    /// Replaces the pod without telling anyone and expires every version
    /// before it: open watches get `410 Gone`, and only a new list sees the
    /// change.
    pub fn expire_with(&self, pod: Value) {
        self.change(|s| {
            s.version += 1;
            s.pod = Some(versioned(pod, s.version));
            s.compacted = s.version;
            s.generation += 1;
        });
    }

    /// Ends every open watch cleanly, as the server does at its timeout.
    pub fn end_watches(&self) {
        self.change(|s| s.generation += 1);
    }

    /// Answers every request with this error status from now on.
    pub fn refuse(&self, code: u16) {
        self.change(|s| s.refuse = Some(code));
    }

    /// The request targets received so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().requests.clone()
    }

    pub fn lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    }

    pub fn watches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Open watches end, so their threads do.
        self.end_watches();
    }
}

fn versioned(mut pod: Value, version: u64) -> Value {
    pod["metadata"]["resourceVersion"] = json!(version.to_string());
    pod
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// One connection, one request (answers say `Connection: close`).
fn serve(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, shared: Arc<(Mutex<State>, Condvar)>) {
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut target = String::new();
    let mut bearer = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if target.is_empty() {
            target = trimmed.split(' ').nth(1).unwrap_or("").to_owned();
        } else if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            bearer = value.trim().trim_start_matches("Bearer ").to_owned();
        }
    }
    let mut stream = reader.into_inner();
    let (lock, wake) = &*shared;
    let mut state = lock.lock().unwrap();
    state.requests.push(target.clone());
    let authorized = bearer == TOKEN;
    let expected = format!("/api/v1/namespaces/{NAMESPACE}/pods?");
    if !authorized {
        drop(state);
        return status(&mut stream, 401, "Unauthorized", "invalid bearer token");
    }
    if let Some(code) = state.refuse {
        drop(state);
        let (reason, message) = match code {
            404 => ("NotFound", format!("namespaces \"{NAMESPACE}\" not found")),
            _ => ("InternalError", "the server is not well".to_owned()),
        };
        return status(&mut stream, code, reason, &message);
    }
    if !target.starts_with(&expected)
        || !target.contains(&format!("fieldSelector=metadata.name%3D{POD}"))
    {
        drop(state);
        return status(&mut stream, 400, "BadRequest", "unexpected request");
    }
    if !target.contains("watch=true") {
        let items: Vec<Value> = state.pod.iter().cloned().collect();
        let body = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.version.to_string()},
            "items": items,
        });
        drop(state);
        return respond(&mut stream, 200, &body.to_string());
    }

    // A watch: events after the requested version, then whatever comes,
    // until the generation changes.
    let from: u64 = query(&target, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let generation = state.generation;
    let mut sent = from;
    loop {
        if sent < state.compacted {
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {sent} ({})", state.compacted),
                "reason": "Expired", "code": 410}});
            let _ = chunk(&mut stream, &format!("{gone}\n"));
            break;
        }
        let news: Vec<String> = state
            .history
            .iter()
            .filter(|(v, _)| *v > sent)
            .map(|(_, e)| format!("{e}\n"))
            .collect();
        if let Some((v, _)) = state.history.last() {
            sent = sent.max(*v);
        }
        if news.iter().any(|event| chunk(&mut stream, event).is_err()) {
            return;
        }
        if state.generation != generation {
            break;
        }
        state = wake
            .wait_timeout(state, Duration::from_millis(500))
            .unwrap()
            .0;
    }
    drop(state);
    let _ = stream.write_all(b"0\r\n\r\n");
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn chunk(stream: &mut Tls, data: &str) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

fn status(stream: &mut Tls, code: u16, reason: &str, message: &str) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure", "message": message, "reason": reason, "code": code});
    respond(stream, code, &body.to_string());
}

fn respond(stream: &mut Tls, code: u16, body: &str) {
    let reply = format!(
        "HTTP/1.1 {code} Answer\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}
