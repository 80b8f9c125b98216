//! The webhook for tests: certificates made by the repository's own
//! `deploy/webhook/self-signed.sh` (openssl), `kubexit webhook` started on a
//! loopback port, and a TLS client (rustls, trusting only the test's CA)
//! that speaks HTTP/1.1 byte by byte, so that tests can send what a slow or
//! hostile client sends.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::util::{DEADLINE, Running, eventually, free_port, kubexit};

/// A CA and a serving certificate for 127.0.0.1 that it signed.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/webhook/self-signed.sh");
        let made = Command::new(&script)
            .args(["--ip", "127.0.0.1", "--days", "2", "--out"])
            .arg(dir.path())
            .output()
            .expect("run deploy/webhook/self-signed.sh");
        assert!(
            made.status.success(),
            "self-signed.sh failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        Pki {
            ca: dir.path().join("ca.crt"),
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        }
    }

    /// The serving certificate, DER, as a client sees it.
    pub fn served(&self) -> Vec<u8> {
        let pem = fs::read(&self.cert).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
    }
}

/// A running `kubexit webhook` on a loopback port.
pub struct Webhook {
    pub process: Running,
    pub port: u16,
}

impl Webhook {
    /// Starts it with the certificate files given and `extra` flags, and
    /// waits until it serves.
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> Webhook {
        Webhook::start_with_env(cert, key, extra, &[])
    }

    /// [`Webhook::start`] with variables `env` set.
    pub fn start_with_env(
        cert: &Path,
        key: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Webhook {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = kubexit();
        for (key, value) in env {
            command.env(key, value);
        }
        let process = command
            .args(["webhook", "--tls-cert"])
            .arg_path(cert)
            .args(["--tls-key"])
            .arg_path(key)
            .args(["--listen", &listen])
            .args(extra)
            .spawn();
        process.wait_for_log("Serving admission reviews");
        Webhook { process, port }
    }

    pub fn with(pki: &Pki, extra: &[&str]) -> Webhook {
        Webhook::start(&pki.cert, &pki.key, extra)
    }

    pub fn client(&self, pki: &Pki) -> Client {
        Client::connect(self.port, &[&pki.ca])
    }

    /// The server's peak resident set so far, KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One TLS connection to the webhook.
pub struct Client {
    pub stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buffered: Vec<u8>,
}

pub fn client_config(cas: &[&Path]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        let pem = fs::read(ca).unwrap();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Client {
    /// Connects and completes the TLS handshake, trusting only `cas`.
    pub fn connect(port: u16, cas: &[&Path]) -> Client {
        Client::try_connect(port, client_config(cas)).expect("TLS connection to the webhook")
    }

    pub fn try_connect(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        tcp.set_read_timeout(Some(DEADLINE))?;
        // Each write goes out at once, as the API server's (Go) do.
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let connection = rustls::ClientConnection::new(config, name)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Client {
            stream,
            buffered: Vec::new(),
        })
    }

    /// The certificate the server presented, DER.
    pub fn served(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// The client's local port, to find the connection in /proc/net/tcp.
    pub fn local_port(&self) -> u16 {
        self.stream.sock.local_addr().unwrap().port()
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a whole request.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
        self.send(&head(method, path, body.len()))?;
        self.send(body)?;
        self.response()
    }

    /// Posts a review to /inject and expects 200.
    pub fn review(&mut self, review: &Value) -> Value {
        let response = self
            .request("POST", "/inject", review.to_string().as_bytes())
            .expect("an answer to the review");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    /// Reads one response.
    pub fn response(&mut self) -> std::io::Result<Response> {
        let end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
        self.buffered.drain(..end + 4);
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buffered.len() < length {
            self.fill()?;
        }
        let body = self.buffered.drain(..length).collect();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Whether the server has closed the connection: a read ends (EOF, a
    /// reset, or TLS's close) rather than times out.
    pub fn closed_by_server(&mut self) -> bool {
        let _ = self
            .stream
            .sock
            .set_read_timeout(Some(Duration::from_millis(50)));
        let mut chunk = [0u8; 1024];
        let closed = match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.sock.set_read_timeout(Some(DEADLINE));
        closed
    }
}

/// The head of a request with a body of `length` bytes.
pub fn head(method: &str, path: &str, length: usize) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Whether everything sent on the connection from `client_port` to
/// `server_port` has been read by the server: acknowledged by its kernel
/// (nothing left in the client's send queue) and taken from the server's
/// receive queue.
pub fn server_read_everything(server_port: u16, client_port: u16) -> bool {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let queues = |local: u16, remote: u16| -> Option<(String, String)> {
        let (local, remote) = (
            format!("0100007F:{local:04X}"),
            format!("0100007F:{remote:04X}"),
        );
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 4 && fields[1] == local && fields[2] == remote {
                let (tx, rx) = fields[4].split_once(':')?;
                Some((tx.to_owned(), rx.to_owned()))
            } else {
                None
            }
        })
    };
    let zero = "00000000";
    let server = queues(server_port, client_port);
    let client = queues(client_port, server_port);
    matches!((server, client), (Some((_, rx)), Some((tx, _))) if rx == zero && tx == zero)
}

/// An AdmissionReview of the creation of `pod` in namespace `team`.
pub fn review_of(pod: &Value) -> Value {
    review_with(
        pod,
        "CREATE",
        json!({"group": "", "version": "v1", "kind": "Pod"}),
    )
}

pub fn review_with(object: &Value, operation: &str, kind: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b1f2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
            "kind": kind,
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": kind,
            "name": object["metadata"]["name"],
            "namespace": "team",
            "operation": operation,
            "userInfo": {"username": "tester", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

/// What an answer says: whether it allows, the patch (decoded), and the
/// message of a denial.
pub struct Answer {
    pub allowed: bool,
    pub patch: Option<Value>,
    pub message: String,
    pub uid: String,
}

pub fn answer(review: &Value) -> Answer {
    let response = &review["response"];
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let patch = response["patch"].as_str().map(|encoded| {
        assert_eq!(response["patchType"], "JSONPatch", "{review}");
        let bytes = base64_decode(encoded);
        serde_json::from_slice(&bytes).expect("the patch is JSON")
    });
    Answer {
        allowed: response["allowed"].as_bool().expect("allowed"),
        patch,
        message: response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        uid: response["uid"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Applies a decoded JSON Patch to `pod`.
pub fn patched(pod: &Value, patch: &Value) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).expect("a JSON Patch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies to the pod sent");
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    // The API server reads []byte as standard base64; so do the tests.
    let value = serde_json::to_value(text).unwrap();
    let bytes: k8s_openapi::ByteString = serde_json::from_value(value).expect("base64");
    bytes.0
}

/// Waits until `condition` holds, polling; for conditions that need a
/// network round trip each time.
pub fn eventually_slow(what: &str, mut condition: impl FnMut() -> bool) {
    eventually(what, || {
        let done = condition();
        if !done {
            std::thread::sleep(Duration::from_millis(50));
        }
        done
    });
}

/// What Istio's injector adds to a Job's pod, as its golden output has it
/// (`tests/fixtures/meshes/istio-job.yaml.injected`): annotations and
/// labels, `istio-init`, `istio-proxy` and its volumes.
pub struct IstioAdditions {
    annotations: serde_json::Map<String, Value>,
    labels: serde_json::Map<String, Value>,
    init: Value,
    proxy: Value,
    volumes: Vec<Value>,
}

impl IstioAdditions {
    pub fn from_golden() -> IstioAdditions {
        let path = crate::util::files::fixtures("meshes").join("istio-job.yaml.injected");
        let text = fs::read_to_string(&path).unwrap();
        let job = kubexit::inject::manifest::parse(&text, "istio-job.yaml.injected")
            .unwrap()
            .remove(0);
        let template = &job["spec"]["template"];
        let mut annotations = template["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .clone();
        // The default-container annotations name the app, which the pod has.
        annotations.retain(|k, _| !k.starts_with("kubectl.kubernetes.io/"));
        let spec = &template["spec"];
        let named = |list: &str, name: &str| -> Value {
            spec[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .clone()
        };
        IstioAdditions {
            annotations,
            labels: template["metadata"]["labels"].as_object().unwrap().clone(),
            init: named("initContainers", "istio-init"),
            proxy: named("containers", "istio-proxy"),
            volumes: spec["volumes"].as_array().unwrap().clone(),
        }
    }

    /// The JSON Patch that adds them to `pod`, as a mutating webhook
    /// answers; none for a pod Istio has injected already (its status
    /// annotation says so), which is how Istio's injector is idempotent.
    pub fn patch(&self, pod: &Value) -> Option<Value> {
        if pod["metadata"]["annotations"]
            .get("sidecar.istio.io/status")
            .is_some()
        {
            return None;
        }
        let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
        let mut ops = Vec::new();
        for (field, values) in [("annotations", &self.annotations), ("labels", &self.labels)] {
            if pod["metadata"][field].is_object() {
                for (key, value) in values {
                    let path = format!("/metadata/{field}/{}", escape(key));
                    ops.push(json!({"op": "add", "path": path, "value": value}));
                }
            } else {
                let path = format!("/metadata/{field}");
                ops.push(json!({"op": "add", "path": path, "value": values}));
            }
        }
        let spec = &pod["spec"];
        let mut append = |list: &str, items: &[Value]| {
            if spec[list].is_array() {
                for item in items {
                    let path = format!("/spec/{list}/-");
                    ops.push(json!({"op": "add", "path": path, "value": item}));
                }
            } else {
                let path = format!("/spec/{list}");
                ops.push(json!({"op": "add", "path": path, "value": items}));
            }
        };
        append("initContainers", std::slice::from_ref(&self.init));
        append("containers", std::slice::from_ref(&self.proxy));
        append("volumes", &self.volumes);
        Some(Value::Array(ops))
    }
}

/// Istio's golden Job's app alone, as a Pod that asks for kubexit.
pub fn istio_app_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pi", "annotations": {"kubexit.io/inject": "enabled"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "pi",
                "image": "perl",
                "command": ["perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"],
            }],
        },
    })
}
