//! The admission webhook under load (issue 16): `kubexit webhook` on a
//! loopback port, over TLS with a certificate made by
//! `deploy/webhook/self-signed.sh`, answering the review of a Pod such as
//! the API server sends (a Job's pod, defaulted, with its service account
//! volume and `kubexit.io/sidecars: proxy`), every answer checked to carry
//! a patch.
//!
//! * **Concurrency 1 and 32**: that many clients, each on one keep-alive
//!   connection (as the API server keeps its connections), each sending
//!   its next review as soon as the last is answered. Latency is from the
//!   first byte written to the last byte of the answer read; reviews per
//!   second is all of them over the wall time, on this machine's cores,
//!   which the clients share with the server.
//! * **At a fixed rate** (500 reviews per second by default), spread over 8
//!   connections: latency is measured from when each review was due, not
//!   from when it was sent, so that a stall shows in the figures instead of
//!   only delaying the next requests (coordinated omission).
//! * **New connections**: concurrency 1, a TLS handshake before every
//!   review, the cost after an idle connection was closed.
//! * **Memory**: the server's resident set before the load and its peak
//!   (`VmHWM`) after it, from /proc.
//! * **Cost**: the server's own time on a CPU per review in each run (from
//!   /proc/PID/task/*/schedstat), which other load on the machine does not
//!   inflate as it does latency; and the review alone (JSON in, decision,
//!   patch, JSON out: `kubexit::webhook::review::review`) timed in this
//!   process, without TLS or HTTP.
//!
//! The results go to `webhook.md` and `webhook.json` beside the harness's
//! own, and the table is printed. Targets: p99 at most 2 ms at 500 reviews
//! per second, peak RSS at most 24 MiB.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::procs;
use crate::stats::{Summary, human_kib, human_ns};

/// Target: p99 latency at 500 reviews per second.
const P99_TARGET_NS: u64 = 2_000_000;
/// Target: the server's peak resident set.
const RSS_TARGET_KIB: u64 = 24 * 1024;

/// How much of each measurement.
pub struct Sizes {
    pub sequential: usize,
    pub concurrent: usize,
    pub rate: u32,
    pub rate_seconds: u64,
    pub handshakes: usize,
}

impl Sizes {
    pub fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                sequential: 20,
                concurrent: 64,
                rate: 50,
                rate_seconds: 1,
                handshakes: 5,
            }
        } else {
            Sizes {
                sequential: 3_000,
                concurrent: 32_000,
                rate: 500,
                rate_seconds: 20,
                handshakes: 300,
            }
        }
    }
}

/// One run of clients.
struct Run {
    label: String,
    latencies: Vec<u64>,
    per_second: f64,
    /// The server's time on a CPU during the run, per review.
    server_cpu_ns: Option<u64>,
}

/// Runs `measure` and adds the server's CPU time per review to its result.
fn with_cpu(pid: i32, measure: impl FnOnce() -> Result<Run, String>) -> Result<Run, String> {
    let before = procs::cpu_ns(pid);
    let mut run = measure()?;
    let after = procs::cpu_ns(pid);
    if let (Some(before), Some(after)) = (before, after) {
        run.server_cpu_ns = Some(after.saturating_sub(before) / run.latencies.len().max(1) as u64);
    }
    Ok(run)
}

/// Measures the webhook of the kubexit at `kubexit`; writes `webhook.md` and
/// `webhook.json` in `out`, and returns the Markdown for the report.
pub fn measure(kubexit: &Path, sizes: &Sizes, out: &Path) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    certificate(dir.path())?;
    let server = Server::start(kubexit, dir.path())?;
    let config = client_config(&dir.path().join("ca.crt"))?;
    let review = Arc::new(review().to_string().into_bytes());
    let idle_kib = server.memory("VmRSS")?;

    // Warm-up: the first answers pay for lazy initialisation.
    closed_loop(server.port, &config, &review, 1, 50, "warm-up")?;
    let pid = server.child.id() as i32;
    let port = server.port;
    let runs = vec![
        with_cpu(pid, || {
            closed_loop(port, &config, &review, 1, sizes.sequential, "concurrency 1")
        })?,
        with_cpu(pid, || {
            closed_loop(
                port,
                &config,
                &review,
                32,
                sizes.concurrent,
                "concurrency 32",
            )
        })?,
        with_cpu(pid, || {
            fixed_rate(
                port,
                &config,
                &review,
                sizes.rate,
                Duration::from_secs(sizes.rate_seconds),
            )
        })?,
        with_cpu(pid, || handshakes(port, &config, &review, sizes.handshakes))?,
    ];
    let in_process = review_alone(&review, sizes.sequential)?;
    let peak_kib = server.memory("VmHWM")?;
    let size = fs::metadata(kubexit).map(|m| m.len()).unwrap_or(0);
    server.stop()?;

    let at_rate = &runs[2];
    let at_rate_p99 = Summary::of(&at_rate.latencies).map_or(u64::MAX, |s| s.p99);
    let mut md = String::from(
        "### Admission webhook\n\n| load | reviews | p50 | p99 | max | reviews/s | server CPU per review |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json_runs = Vec::new();
    for run in &runs {
        let s = Summary::of(&run.latencies).ok_or("a run without samples")?;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {} |\n",
            run.label,
            s.count,
            human_ns(s.p50 as f64),
            human_ns(s.p99 as f64),
            human_ns(s.max as f64),
            run.per_second,
            run.server_cpu_ns
                .map_or("?".to_owned(), |ns| human_ns(ns as f64))
        ));
        json_runs.push(json!({
            "load": run.label, "count": s.count, "p50_ns": s.p50, "p90_ns": s.p90,
            "p99_ns": s.p99, "max_ns": s.max, "per_second": run.per_second,
            "server_cpu_ns_per_review": run.server_cpu_ns,
        }));
    }
    let alone = Summary::of(&in_process).ok_or("no in-process samples")?;
    md.push_str(&format!(
        "\nThe review alone, in process (no TLS, no HTTP): p50 {}, p99 {} over {} reviews.\n",
        human_ns(alone.p50 as f64),
        human_ns(alone.p99 as f64),
        alone.count
    ));
    md.push_str(&format!(
        "\nMemory: {} resident before the load, {} at its peak (target at most {}). \
         p99 at {} reviews/s: {} (target at most {}). Binary: {} bytes.\n",
        human_kib(idle_kib),
        human_kib(peak_kib),
        human_kib(RSS_TARGET_KIB),
        sizes.rate,
        human_ns(at_rate_p99 as f64),
        human_ns(P99_TARGET_NS as f64),
        size
    ));
    let results = json!({
        "runs": json_runs,
        "review_alone": {"count": alone.count, "p50_ns": alone.p50, "p99_ns": alone.p99},
        "idle_rss_kib": idle_kib,
        "peak_rss_kib": peak_kib,
        "binary_bytes": size,
        "targets": {"p99_ns_at_rate": P99_TARGET_NS, "rate": sizes.rate, "peak_rss_kib": RSS_TARGET_KIB},
    });
    let write = |name: &str, text: String| {
        let path = out.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok::<(), String>(())
    };
    write("webhook.json", format!("{results:#}\n"))?;
    write("webhook.md", md.clone())?;
    Ok(md)
}

/// `review` answered `count` times by the webhook's own function, in this
/// process; each time in nanoseconds.
fn review_alone(review: &[u8], count: usize) -> Result<Vec<u64>, String> {
    let options = kubexit::inject::Options::default();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let answered = kubexit::webhook::review::review(review, &options)
            .map_err(|e| format!("the review alone: {e}"))?;
        times.push(nanos(started));
        if !matches!(
            answered.outcome,
            kubexit::webhook::review::Outcome::Injected(_)
        ) {
            return Err(format!("the review alone: {:?}", answered.outcome));
        }
    }
    Ok(times)
}

/// The CA and the serving certificate for 127.0.0.1, by the repository's
/// own script.
fn certificate(dir: &Path) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/webhook/self-signed.sh");
    let made = Command::new(&script)
        .args(["--ip", "127.0.0.1", "--out"])
        .arg(dir)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !made.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    Ok(())
}

/// A running `kubexit webhook`.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(kubexit: &Path, dir: &Path) -> Result<Server, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let log = dir.join("webhook.log");
        let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut command = Command::new(kubexit);
        command
            .args(["webhook", "--tls-cert"])
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // One line per review would measure the terminal.
            .args(["--log-level", "warn"])
            .env_remove("KUBEXIT_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kubexit.display()))?;
        let server = Server { child, port, log };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the webhook did not listen within 30 s: {}",
                    fs::read_to_string(&server.log).unwrap_or_default()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn memory(&self, field: &str) -> Result<u64, String> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("cannot read the webhook's status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {field} in the webhook's status"))
    }

    /// SIGTERM, and it must exit 0.
    fn stop(mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the webhook exited with {status}: {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            ))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As the API server's Go client: no session resumption.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One keep-alive connection to the webhook.
struct Connection {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    fn open(port: u16, config: &Arc<rustls::ClientConfig>) -> Result<Connection, String> {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let tls =
            rustls::ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
        Ok(Connection {
            stream: rustls::StreamOwned::new(tls, tcp),
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// Posts the review and reads the answer; checks that it carries a
    /// patch.
    fn review(&mut self, body: &[u8]) -> Result<(), String> {
        let head = format!(
            "POST /inject?timeout=5s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("send: {e}"))?;
        self.buffer.clear();
        let (end, length) = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    return Err(format!("answer: {head}"));
                }
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or("an answer without Content-Length")?;
                break (end + 4, length);
            }
            self.fill()?;
        };
        while self.buffer.len() < end + length {
            self.fill()?;
        }
        if !self.buffer[end..].windows(9).any(|w| w == b"\"patch\":\"") {
            return Err(format!(
                "an answer without a patch: {}",
                String::from_utf8_lossy(&self.buffer[end..])
            ));
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("the webhook closed the connection".to_owned()),
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `clients` connections, `total` reviews among them, each sent when the
/// last was answered.
fn closed_loop(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    review: &Arc<Vec<u8>>,
    clients: usize,
    total: usize,
    label: &str,
) -> Result<Run, String> {
    let each = total.div_ceil(clients);
    let started = Instant::now();
    let threads: Vec<thread::JoinHandle<Result<Vec<u64>, String>>> = (0..clients)
        .map(|_| {
            let (config, review) = (Arc::clone(config), Arc::clone(review));
            thread::spawn(move || {
                let mut connection = Connection::open(port, &config)?;
                let mut latencies = Vec::with_capacity(each);
                for _ in 0..each {
                    let sent = Instant::now();
                    connection.review(&review)?;
                    latencies.push(nanos(sent));
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(each * clients);
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a client panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "webhook: {label}: {} reviews in {seconds:.2} s",
        latencies.len()
    );
    Ok(Run {
        label: label.to_owned(),
        per_second: latencies.len() as f64 / seconds,
        latencies,
        server_cpu_ns: None,
    })
}

/// `rate` reviews per second for `length`, over 8 connections; latency
/// from each review's due time.
fn fixed_rate(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    review: &Arc<Vec<u8>>,
    rate: u32,
    length: Duration,
) -> Result<Run, String> {
    const CONNECTIONS: u32 = 8;
    let interval = Duration::from_secs(1) * CONNECTIONS / rate.max(1);
    let per_connection = (length.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<thread::JoinHandle<Result<Vec<u64>, String>>> = (0..CONNECTIONS)
        .map(|i| {
            let (config, review) = (Arc::clone(config), Arc::clone(review));
            // Connections take their turns evenly within each interval.
            let offset = interval * i / CONNECTIONS;
            thread::spawn(move || {
                let mut connection = Connection::open(port, &config)?;
                let mut latencies = Vec::with_capacity(per_connection);
                for n in 0..per_connection {
                    let due = start + offset + interval * n as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    connection.review(&review)?;
                    latencies.push(u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a client panicked")??);
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "webhook: {rate}/s: {} reviews in {seconds:.2} s",
        latencies.len()
    );
    Ok(Run {
        label: format!("{rate}/s, 8 connections"),
        per_second: latencies.len() as f64 / seconds,
        latencies,
        server_cpu_ns: None,
    })
}

/// One review per new connection, handshake included.
fn handshakes(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    review: &Arc<Vec<u8>>,
    total: usize,
) -> Result<Run, String> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    for _ in 0..total {
        let sent = Instant::now();
        let mut connection = Connection::open(port, config)?;
        connection.review(review)?;
        latencies.push(nanos(sent));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Run {
        label: "new connection each".to_owned(),
        per_second: latencies.len() as f64 / seconds,
        latencies,
        server_cpu_ns: None,
    })
}

/// The review of a Job's pod as the API server sends it: defaulted, with
/// the service account's token volume, and asking for kubexit.
fn review() -> Value {
    let container = |name: &str, image: &str, command: Value| {
        json!({
            "name": name,
            "image": image,
            "command": command,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "volumeMounts": [{
                "name": "kube-api-access-7x2lq",
                "readOnly": true,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        })
    };
    let mut proxy = container(
        "proxy",
        "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.13.0",
        json!(["/cloud-sql-proxy"]),
    );
    proxy["args"] = json!([
        "--port=5432",
        "--health-check",
        "--http-address=0.0.0.0",
        "p:r:i"
    ]);
    proxy["ports"] = json!([{"name": "health", "containerPort": 9090, "protocol": "TCP"}]);
    proxy["readinessProbe"] = json!({
        "httpGet": {"path": "/readiness", "port": "health", "scheme": "HTTP"},
        "periodSeconds": 2, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
    });
    let pod = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "report-",
            "namespace": "team",
            "creationTimestamp": null,
            "labels": {"batch.kubernetes.io/job-name": "report", "job-name": "report"},
            "annotations": {"kubexit.io/sidecars": "proxy"},
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": "report",
                "uid": "6b3f7e2a-1c9d-4e8f-a0b1-2c3d4e5f6a7b",
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "volumes": [{
                "name": "kube-api-access-7x2lq",
                "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                ], "defaultMode": 420},
            }],
            "containers": [
                container("extract", "postgres:16-alpine", json!(["psql", "-h", "127.0.0.1", "-c", "select 1"])),
                container("load", "postgres:16-alpine", json!(["psql", "-h", "127.0.0.1", "-c", "select 2"])),
                proxy,
            ],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    });
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": "team",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:job-controller",
                "uid": "a1b2c3d4-e5f6-4789-a0b1-c2d3e4f5a6b7",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    })
}
