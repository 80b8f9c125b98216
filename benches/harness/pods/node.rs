//! The node the Jobs run on, and how the harness talks to it.
//!
//! - **The node**: the single-node cluster of `../shared/peers/cluster`
//!   (its README says what it is), started for the run in a directory of
//!   its own and stopped at the end, or one already up named by
//!   `--node-env`, which is left running. A guard process holds a pipe from
//!   the harness and runs `cluster/down` when it closes, so the node is
//!   stopped however the harness ends.
//! - **The API**: curl with the admin token, as the tests talk to it; a
//!   request is seconds away from any figure measured, and curl keeps the
//!   harness free of a TLS client.
//! - **Watches**: a Job's progress is read from the API server's watch
//!   streams, one of the namespace's Jobs and one of its pods, each a curl
//!   reading newline-delimited events, every event stamped with the
//!   harness's clock as its line arrives. Nothing is polled, so nothing
//!   adds load between the steps measured; a stream the server closes is
//!   opened again from the last resource version seen, so no event is
//!   lost.
//! - **Images**: built with buildah in a store of their own (vfs, in a
//!   temporary directory) from the node's busybox image, each with one
//!   binary at `/bin/kubexit`, written to OCI archives and imported with
//!   `cluster/images`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A node with its API server.
pub struct Node {
    url: String,
    ca: PathBuf,
    token: String,
    /// `cluster/up`'s state directory.
    pub state: PathBuf,
    /// Said in the report: started for the run, or given.
    pub origin: String,
    /// For a node started here: the pipe whose closing stops it.
    guard: Option<(Child, ChildStdin)>,
}

impl Node {
    /// The node `env` names (`cluster/up`'s env file), left running.
    pub fn given(env: &Path) -> Result<Node, String> {
        let mut node = Node::from_env_file(env)?;
        node.origin = format!("already up ({})", env.display());
        Ok(node)
    }

    /// Starts a node of `cluster` (`../shared/peers/cluster`) in a fresh
    /// directory, stopped when the returned value is dropped.
    pub fn start(cluster: &Path) -> Result<Node, String> {
        // Short: the node's sockets live under it.
        let state = tempfile::Builder::new()
            .prefix("kx-bench-node-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        let mut guard = Command::new("bash")
            .args(["-c", r#"read -r _; "$0" "$1" >/dev/null 2>&1; rm -rf "$1""#])
            .arg(cluster.join("down"))
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the node's guard: {e}"))?;
        let pipe = guard.stdin.take().ok_or("the guard has no stdin")?;
        let guard = Some((guard, pipe));
        let up = cluster.join("up");
        let started = Command::new(&up)
            .arg(&state)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", up.display()));
        let started = match started {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                stop(guard);
                return Err(format!(
                    "{} failed ({}): {}",
                    up.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                stop(guard);
                return Err(e);
            }
        };
        let line = String::from_utf8_lossy(&started.stdout).trim().to_owned();
        eprintln!("pods: {line}");
        let mut node = match Node::from_env_file(&state.join("env")) {
            Ok(node) => node,
            Err(e) => {
                stop(guard);
                return Err(e);
            }
        };
        node.guard = guard;
        node.origin = "started for the run, stopped after it".to_owned();
        Ok(node)
    }

    fn from_env_file(path: &Path) -> Result<Node, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read the node's env file {}: {e}", path.display()))?;
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let var = |key: &str| {
            vars.get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("{} has no {key}", path.display()))
        };
        let token_file = var("KUBE_ADMIN_TOKEN_FILE")?;
        let token = fs::read_to_string(&token_file)
            .map_err(|e| format!("cannot read {token_file}: {e}"))?
            .trim()
            .to_owned();
        Ok(Node {
            url: var("KUBE_URL")?,
            ca: PathBuf::from(var("KUBE_CA")?),
            token,
            state: path.parent().unwrap_or(Path::new("/")).to_owned(),
            origin: String::new(),
            guard: None,
        })
    }

    /// One request: the status code and the body (JSON, or a string).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut curl = curl(&self.ca, &self.token);
        curl.args(["--max-time", "60", "-X", method])
            .args(["-H", "Content-Type: application/json"])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if body.is_some() {
            curl.args(["--data-binary", "@-"]);
        }
        let mut child = curl.spawn().map_err(|e| format!("cannot run curl: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("curl has no stdin")?;
        if let Some(body) = body {
            stdin
                .write_all(body.to_string().as_bytes())
                .map_err(|e| format!("curl {method} {path}: {e}"))?;
        }
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| format!("curl {method} {path}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().map_err(|_| {
            format!(
                "curl {method} {path}: no status ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        Ok((code, body))
    }

    /// A request that must answer `expected` (one of them).
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        expected: &[u16],
    ) -> Result<Value, String> {
        let (code, answer) = self.request(method, path, body)?;
        if !expected.contains(&code) {
            return Err(format!("{method} {path}: {code} {answer}"));
        }
        Ok(answer)
    }

    /// Watches the collection at `list` (`/api/v1/namespaces/NS/pods`),
    /// from its current resource version on; each event goes to `events`.
    pub fn watch(&self, list: &str, events: Sender<Event>) -> Result<Watch, String> {
        let listed = self.expect("GET", list, None, &[200])?;
        let version = listed["metadata"]["resourceVersion"]
            .as_str()
            .ok_or_else(|| format!("GET {list}: no resourceVersion"))?
            .to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Mutex::new(None));
        let stream = Stream {
            ca: self.ca.clone(),
            token: self.token.clone(),
            url: format!("{}{list}", self.url),
            stop: Arc::clone(&stop),
            curl: Arc::clone(&running),
        };
        let thread = thread::spawn(move || stream.run(version, events));
        Ok(Watch {
            stop,
            curl: running,
            thread: Some(thread),
        })
    }

    /// Builds the images of `binaries` (name, binary to put at
    /// `/bin/kubexit`) from the node's busybox image and imports them.
    pub fn load_images(&self, cluster: &Path, binaries: &[(&str, &Path)]) -> Result<(), String> {
        let store = tempfile::Builder::new()
            .prefix("kx-bench-images-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temporary directory: {e}"))?;
        let conf = store.path().join("storage.conf");
        fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                store.path().display()
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
        let buildah = |args: &[&str]| -> Result<String, String> {
            let out = Command::new("buildah")
                .env("CONTAINERS_STORAGE_CONF", &conf)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run buildah: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "buildah {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let base = format!(
            "oci-archive:{}",
            self.state.join("images/busybox.tar").display()
        );
        let mut archives = Vec::new();
        for (name, binary) in binaries {
            let archive = store.path().join(format!("{}.tar", archives.len()));
            let container = buildah(&["from", "--quiet", &base])?;
            let built = buildah(&[
                "copy",
                "--quiet",
                &container,
                &binary.to_string_lossy(),
                "/bin/kubexit",
            ])
            .and_then(|_| {
                buildah(&[
                    "commit",
                    "--quiet",
                    &container,
                    &format!("oci-archive:{}:{name}", archive.display()),
                ])
            });
            let _ = buildah(&["rm", &container]);
            built?;
            archives.push(archive);
        }
        let imported = Command::new(cluster.join("images"))
            .arg(&self.state)
            .args(&archives)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run cluster/images: {e}"))?;
        if !imported.status.success() {
            return Err(format!(
                "cluster/images: {}",
                String::from_utf8_lossy(&imported.stderr).trim()
            ));
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            eprintln!("pods: stopping the node");
            stop(Some(guard));
        }
    }
}

/// Closes the guard's pipe and waits for it: the node is down, its
/// directory removed.
fn stop(guard: Option<(Child, ChildStdin)>) {
    if let Some((mut child, pipe)) = guard {
        drop(pipe);
        let _ = child.wait();
    }
}

/// One event of a watch, or the end of one.
pub enum Event {
    /// `ADDED`, `MODIFIED` or `DELETED`, and the object, when its line
    /// arrived.
    Seen {
        at: Instant,
        kind: String,
        object: Value,
    },
    /// The stream cannot go on (an `ERROR` event, curl missing).
    Broken(String),
}

/// A watch in its thread; stopped when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    /// The curl reading the stream now, until the thread reaps it.
    curl: Arc<Mutex<Option<u32>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Under the lock the thread has not reaped this curl yet, so the
        // pid is still its own.
        if let Some(pid) = *self.curl.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Stream {
    ca: PathBuf,
    token: String,
    url: String,
    stop: Arc<AtomicBool>,
    curl: Arc<Mutex<Option<u32>>>,
}

impl Stream {
    /// Reads events until stopped, opening the stream again from the last
    /// version seen whenever the server ends it.
    fn run(self, mut version: String, events: Sender<Event>) {
        // Streams in a row that ended before their first event: the
        // server is not answering, and trying again at once would spin.
        let mut empty = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let url = format!(
                "{}?watch=true&allowWatchBookmarks=true&timeoutSeconds=3600&resourceVersion={version}",
                self.url
            );
            let spawned = curl(&self.ca, &self.token)
                .args(["-N", "--no-buffer"])
                .arg(&url)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    let _ = events.send(Event::Broken(format!("cannot run curl: {e}")));
                    return;
                }
            };
            {
                let mut running = self.curl.lock().unwrap_or_else(|p| p.into_inner());
                // A drop that came before this lock saw no curl to stop.
                if self.stop.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                *running = Some(child.id());
            }
            let before = version.clone();
            let ended = child
                .stdout
                .take()
                .is_none_or(|out| self.read(out, &mut version, &events));
            *self.curl.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if ended {
                let _ = child.kill();
            }
            let _ = child.wait();
            if ended {
                return;
            }
            empty = if version == before { empty + 1 } else { 0 };
            if empty == 5 && !self.stop.load(Ordering::SeqCst) {
                let _ = events.send(Event::Broken(format!(
                    "the watch of {} ended {empty} times in a row without an event: is the API \
                     server up?",
                    self.url
                )));
                return;
            }
        }
    }

    /// Sends the events of one stream; true when the watch must end (an
    /// `ERROR` event, no one listening), false when the stream did.
    fn read(&self, out: impl std::io::Read, version: &mut String, events: &Sender<Event>) -> bool {
        for line in BufReader::new(out).lines() {
            let at = Instant::now();
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            if let Some(v) = event["object"]["metadata"]["resourceVersion"].as_str() {
                *version = v.to_owned();
            }
            match kind.as_str() {
                "BOOKMARK" => {}
                "ERROR" => {
                    let _ = events.send(Event::Broken(format!(
                        "the watch of {} failed: {}",
                        self.url, event["object"]
                    )));
                    return true;
                }
                _ => {
                    let object = event["object"].clone();
                    if events.send(Event::Seen { at, kind, object }).is_err() {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// curl with the node's CA and the admin token.
fn curl(ca: &Path, token: &str) -> Command {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--cacert"])
        .arg(ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "Accept: application/json"]);
    curl
}
