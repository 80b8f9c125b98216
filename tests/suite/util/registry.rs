//! Real image registries for the registry client's tests: Debian's
//! `docker-registry` (distribution 2.8) on loopback, serving images that
//! buildah built and pushed.
//!
//! Started once per test binary, on first use ([`registries`]), in a
//! temporary directory: one CA (made with openssl) signs the certificate
//! every server presents, and four registries share one storage directory:
//!
//! - `open`: TLS, no authentication; buildah pushes here, and tests read
//!   public images from it;
//! - `basic`: TLS and htpasswd (`htpasswd -Bbn`), basic auth for everything;
//! - `token`: TLS and token authentication, with [`TokenServer`] (in this
//!   process) as its token service: anonymous pulls of any repository but
//!   `private/...`, pulls and pushes of everything for [`USER`];
//! - `plain`: plain HTTP, no authentication (a registry named insecure).
//!
//! They stop when the test binary exits, however it exits: a guard process
//! holds a pipe from this process and, when the kernel closes it, kills
//! them by the pids written down as they started, and removes the
//! directory. Requests are counted from each registry's access log
//! ([`Registry::requests`]).
//!
//! Without `docker-registry`, buildah, openssl or htpasswd the tests are
//! skipped, saying why (a failure under CI, whose `.ci/run` installs them).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::util::{DEADLINE, free_port, loopback_tls, skip};

/// The user the `basic` and `token` registries know.
pub const USER: &str = "kx-user";
pub const PASSWORD: &str = "kx-password";

const SERVICE: &str = "kubexit-test-registry";
const ISSUER: &str = "kubexit-test-issuer";

/// The registries of this test binary.
pub struct Registries {
    pub dir: PathBuf,
    /// The CA that signs every server's certificate (PEM).
    pub ca: PathBuf,
    pub open: Registry,
    pub basic: Registry,
    pub token: Registry,
    pub plain: Registry,
    pub tokens: TokenServer,
    buildah: Buildah,
}

/// One running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub authority: String,
    log: PathBuf,
}

/// A request as a registry's access log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Registry {
    /// The reference of `repository_and_tag` here.
    pub fn image(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.authority)
    }

    /// Every request this registry has logged, in order.
    pub fn requests(&self) -> Vec<Logged> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                // 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"
                let (_, rest) = line.split_once("] \"")?;
                let (request, rest) = rest.split_once("\" ")?;
                let mut words = request.split(' ');
                let method = words.next()?.to_owned();
                let path = words.next()?.to_owned();
                let status = rest.split(' ').next()?.parse().ok()?;
                Some(Logged {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }

    /// The requests so far whose path holds `needle`, once every request
    /// made before this call has been logged: a marker request is made,
    /// and its line awaited (the log is written as answers complete).
    pub fn requests_for(&self, needle: &str) -> Vec<Logged> {
        static MARKS: AtomicUsize = AtomicUsize::new(0);
        let mark = format!(
            "/v2/mark-{}-{}/tags/list",
            std::process::id(),
            MARKS.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "--max-time", "10"])
            .arg(format!("https://{}{mark}", self.authority))
            .status();
        let start = Instant::now();
        loop {
            let requests = self.requests();
            if requests.iter().any(|r| r.path == mark) {
                return requests
                    .into_iter()
                    .filter(|r| r.path.contains(needle))
                    .collect();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the marker request {mark} never reached the access log of {}",
                self.authority
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The registries, started on first use; `None` after saying why the test
/// is skipped.
pub fn registries(test: &str) -> Option<&'static Registries> {
    static REGISTRIES: OnceLock<Result<Registries, String>> = OnceLock::new();
    match REGISTRIES.get_or_init(start) {
        Ok(registries) => Some(registries),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

fn missing_tools() -> Vec<&'static str> {
    [
        ("docker-registry", "docker-registry"),
        ("buildah", "buildah"),
        ("openssl", "openssl"),
        ("htpasswd", "apache2-utils"),
        ("curl", "curl"),
    ]
    .into_iter()
    .filter(|(tool, _)| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|(_, package)| package)
    .collect()
}

fn start() -> Result<Registries, String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(format!(
            "missing: apt-get install {} (.ci/run does)",
            missing.join(" ")
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("kubexit-registries-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?
        .keep();
    // The guard first, so that even a half-started set is stopped.
    let mut guard = Command::new("bash")
        .args([
            "-c",
            r#"read -r _; [ -f "$0/pids" ] && kill $(cat "$0/pids") 2>/dev/null; sleep 0.2; rm -rf "$0""#,
        ])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the guard of the registries: {e}"))?;
    static GUARD: Mutex<Option<ChildStdin>> = Mutex::new(None);
    *GUARD.lock().unwrap() = guard.stdin.take();

    certificates(&dir)?;
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .map_err(|e| format!("htpasswd: {e}"))?;
    if !htpasswd.status.success() {
        return Err(format!(
            "htpasswd -Bbn failed: {}",
            String::from_utf8_lossy(&htpasswd.stderr)
        ));
    }
    fs::write(dir.join("htpasswd"), &htpasswd.stdout).map_err(|e| e.to_string())?;
    let tokens = TokenServer::start(&dir)?;

    let tls = format!(
        "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\n",
        dir.display()
    );
    let open = serve(&dir, "open", &tls, "")?;
    let basic = serve(
        &dir,
        "basic",
        &tls,
        &format!(
            "auth:\n  htpasswd:\n    realm: kubexit-test\n    path: {}/htpasswd\n",
            dir.display()
        ),
    )?;
    let token = serve(
        &dir,
        "token",
        &tls,
        &format!(
            "auth:\n  token:\n    realm: https://{}/token\n    service: {SERVICE}\n    issuer: \
             {ISSUER}\n    rootcertbundle: {}/token.crt\n",
            tokens.authority,
            dir.display()
        ),
    )?;
    let plain = serve(&dir, "plain", "", "")?;
    let buildah = Buildah::new(&dir)?;
    let registries = Registries {
        ca: dir.join("ca.crt"),
        dir,
        open,
        basic,
        token,
        plain,
        tokens,
        buildah,
    };
    registries.push_the_images()?;
    Ok(registries)
}

/// The CA, the servers' certificate (for 127.0.0.1), and the token
/// service's signing certificate (RSA, self-signed: the registry trusts
/// it as its root bundle).
fn certificates(dir: &Path) -> Result<(), String> {
    loopback_tls::certificates(dir)?;
    loopback_tls::openssl(
        dir,
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=kubexit-test-token-signer",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
        ],
    )
}

/// Starts `docker-registry serve` named `name` on a free loopback port,
/// with `tls` (the `http.tls` lines, or nothing) and `auth` (the `auth`
/// section, or nothing); tries another port if the one chosen was taken.
fn serve(dir: &Path, name: &str, tls: &str, auth: &str) -> Result<Registry, String> {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let config = dir.join(format!("{name}.yml"));
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}/storage\n  delete:\n    enabled: \
                 false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kubexit-test\n{tls}{auth}",
                dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pids"))
            .map_err(|e| e.to_string())?;
        writeln!(pids, "{}", child.id()).map_err(|e| e.to_string())?;
        match listening(&mut child, port) {
            Ok(()) => {
                // The child is reaped by nobody until the guard kills it;
                // forgetting it keeps it running after this handle goes.
                std::mem::forget(child);
                return Ok(Registry {
                    authority: format!("127.0.0.1:{port}"),
                    log,
                });
            }
            Err(why) => last = format!("{why}: {}", fs::read_to_string(&log).unwrap_or_default()),
        }
    }
    Err(format!("docker-registry {name} did not start: {last}"))
}

fn listening(child: &mut Child, port: u16) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err("it did not listen in time".into())
}

/// buildah with a store of its own in the registries' directory.
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn new(dir: &Path) -> Result<Buildah, String> {
        let buildah = Buildah {
            root: dir.join("buildah"),
        };
        fs::write(dir.join("hello"), "hello from a test image\n").map_err(|e| e.to_string())?;
        buildah.run(&["--version"])?;
        Ok(buildah)
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("buildah: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "buildah {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A tiny image: one file, built from scratch.
pub struct Build<'a> {
    pub name: &'a str,
    pub arch: &'a str,
    /// `--entrypoint` in JSON, or nothing.
    pub entrypoint: Option<&'a str>,
    /// `--cmd` in JSON, or nothing.
    pub cmd: Option<&'a str>,
}

impl Registries {
    /// Builds `build` into the local store.
    pub fn build(&self, build: &Build<'_>) -> Result<(), String> {
        let b = &self.buildah;
        let container = b.run(&["from", "scratch"])?;
        let hello = self.dir.join("hello");
        b.run(&["copy", &container, &hello.to_string_lossy(), "/hello"])?;
        let mut config = vec!["config", "--os", "linux", "--arch", build.arch];
        if let Some(entrypoint) = build.entrypoint {
            config.extend(["--entrypoint", entrypoint]);
        }
        if let Some(cmd) = build.cmd {
            config.extend(["--cmd", cmd]);
        }
        config.push(&container);
        b.run(&config)?;
        b.run(&["commit", "-q", &container, build.name])?;
        b.run(&["rm", &container])?;
        Ok(())
    }

    /// Builds an image on the OCI archive `base` (one with a shell, such
    /// as the node's stand-ins) into the local store as `name`, with
    /// `entrypoint` (none when `None`) and `cmd`, both JSON.
    pub fn build_on(
        &self,
        base: &Path,
        name: &str,
        entrypoint: Option<&str>,
        cmd: &str,
    ) -> Result<(), String> {
        let b = &self.buildah;
        let container = b.run(&["from", &format!("oci-archive:{}", base.display())])?;
        b.run(&[
            "config",
            "--entrypoint",
            entrypoint.unwrap_or("[]"),
            "--cmd",
            cmd,
            &container,
        ])?;
        b.run(&["commit", "-q", &container, name])?;
        b.run(&["rm", &container]).map(drop)
    }

    /// Writes the local image `name` to the OCI archive `archive`, named
    /// `named` in it (what the node's `images` imports it as).
    pub fn save(&self, name: &str, archive: &Path, named: &str) -> Result<(), String> {
        let target = format!("oci-archive:{}:{named}", archive.display());
        self.buildah.run(&["push", "-q", name, &target]).map(drop)
    }

    /// Pushes the local image `name` to the open registry as
    /// `repository_and_tag`; `format` is `oci` or `v2s2`.
    pub fn push(&self, name: &str, repository_and_tag: &str, format: &str) -> Result<(), String> {
        let target = format!("docker://{}", self.open.image(repository_and_tag));
        self.buildah
            .run(&[
                "push",
                "-q",
                "--tls-verify=false",
                "--format",
                format,
                name,
                &target,
            ])
            .map(drop)
    }

    /// Pushes a list of the local images `names` as `repository_and_tag`:
    /// an OCI index (`oci`) or a Docker manifest list (`v2s2`).
    pub fn push_list(
        &self,
        names: &[&str],
        repository_and_tag: &str,
        format: &str,
    ) -> Result<(), String> {
        static LISTS: AtomicUsize = AtomicUsize::new(0);
        let list = format!("list-{}", LISTS.fetch_add(1, Ordering::Relaxed));
        self.buildah.run(&["manifest", "create", &list])?;
        for name in names {
            self.buildah.run(&["manifest", "add", &list, name])?;
        }
        let target = format!("docker://{}", self.open.image(repository_and_tag));
        self.buildah.run(&[
            "manifest",
            "push",
            "-q",
            "--all",
            "--tls-verify=false",
            "--format",
            format,
            &list,
            &target,
        ])?;
        self.buildah.run(&["manifest", "rm", &list]).map(drop)
    }

    /// The images every test may read (each test that counts requests
    /// pushes its own).
    fn push_the_images(&self) -> Result<(), String> {
        let hello = Some(r#"["/hello","--greet"]"#);
        let world = Some(r#"["world"]"#);
        for (name, arch, entrypoint, cmd) in [
            ("hello-amd64", "amd64", hello, world),
            ("hello-arm64", "arm64", hello, world),
            ("arm-only-arm64", "arm64", Some(r#"["/app-arm64"]"#), None),
            ("cmd-only", "amd64", None, Some(r#"["/hello","run"]"#)),
        ] {
            self.build(&Build {
                name,
                arch,
                entrypoint,
                cmd,
            })?;
        }
        self.push("hello-amd64", "single/oci:1", "oci")?;
        self.push("hello-amd64", "single/docker:1", "v2s2")?;
        self.push("cmd-only", "cmd-only:1", "oci")?;
        self.push("hello-amd64", "private/app:1", "oci")?;
        self.push_list(&["hello-amd64", "hello-arm64"], "multi/agree:oci", "oci")?;
        self.push_list(
            &["hello-amd64", "hello-arm64"],
            "multi/agree:docker",
            "v2s2",
        )?;
        self.push_list(
            &["hello-amd64", "arm-only-arm64"],
            "multi/disagree:1",
            "oci",
        )?;
        Ok(())
    }

    /// The manifest `repository_and_tag` as the open registry serves it:
    /// its media type and `Docker-Content-Digest`, read with curl.
    pub fn manifest_of(&self, repository_and_tag: &str) -> (String, String) {
        let (repository, tag) = repository_and_tag.rsplit_once(':').expect("REPOSITORY:TAG");
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "--cacert"])
            .arg(&self.ca)
            .args(["-H", &format!("Accept: {}", kubexit_accept())])
            .arg(format!(
                "https://{}/v2/{repository}/manifests/{tag}",
                self.open.authority
            ))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        (header("content-type"), header("docker-content-digest"))
    }
}

fn kubexit_accept() -> &'static str {
    "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json"
}

/// The token service of the `token` registry: HTTPS on loopback, one
/// request per connection. Anonymous requests get pull access to every
/// repository but `private/...`; [`USER`] with [`PASSWORD`] gets pull and
/// push on everything; any other credentials are refused with 401 and a
/// message. The tokens are JWTs signed with `token.key`, carrying its
/// certificate (`x5c`), as distribution verifies them.
pub struct TokenServer {
    pub authority: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start(dir: &Path) -> Result<TokenServer, String> {
        let read_certs = |file: &str| {
            CertificateDer::pem_file_iter(dir.join(file))
                .map_err(|e| format!("{file}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{file}: {e}"))
        };
        let certs = read_certs("server.crt")?;
        let key =
            PrivateKeyDer::from_pem_file(dir.join("server.key")).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        let tls = Arc::new(tls);
        let signer_cert = read_certs("token.crt")?
            .into_iter()
            .next()
            .ok_or("token.crt holds no certificate")?;
        let signer_key =
            PrivateKeyDer::from_pem_file(dir.join("token.key")).map_err(|e| e.to_string())?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&signer_key)
            .map_err(|e| format!("token.key: {e}"))?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(signer_cert.as_ref());
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let authority = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let signer = Arc::new(signer);
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (tls, seen, signer, x5c) = (
                    Arc::clone(&tls),
                    Arc::clone(&seen),
                    Arc::clone(&signer),
                    x5c.clone(),
                );
                thread::spawn(move || {
                    let _ = serve_token(tcp, tls, &seen, &**signer, &x5c);
                });
            }
        });
        Ok(TokenServer {
            authority,
            requests,
        })
    }

    /// The scopes asked for so far (one per token request), with the
    /// account when one was named: `repository:a/b:pull as kx-user`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_token(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    seen: &Mutex<Vec<String>>,
    signer: &dyn rustls::sign::SigningKey,
    x5c: &str,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decoded(v))
        })
    };
    let scope = param("scope").unwrap_or_default();
    let basic = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.eq_ignore_ascii_case("authorization") {
            return None;
        }
        let encoded = v.trim().strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        pair.split_once(':')
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
    });
    seen.lock().unwrap().push(match &basic {
        Some((user, _)) => format!("{scope} as {user}"),
        None => scope.clone(),
    });
    let (status, body) = match &basic {
        Some((user, password)) if user != USER || password != PASSWORD => (
            "401 Unauthorized",
            r#"{"details":"incorrect username or password"}"#.to_owned(),
        ),
        _ => {
            let mut access = Vec::new();
            // repository:NAME:ACTIONS, several separated by spaces.
            for one in scope.split(' ').filter(|s| !s.is_empty()) {
                let mut parts = one.splitn(3, ':');
                let (kind, name, actions) = (parts.next(), parts.next(), parts.next());
                let (Some("repository"), Some(name), Some(actions)) = (kind, name, actions) else {
                    continue;
                };
                let granted: Vec<&str> = if basic.is_some() {
                    actions.split(',').collect()
                } else if name.starts_with("private/") {
                    Vec::new()
                } else {
                    actions.split(',').filter(|a| *a == "pull").collect()
                };
                access.push(serde_json::json!({
                    "type": "repository", "name": name, "actions": granted
                }));
            }
            let token = jwt(
                signer,
                x5c,
                basic.as_ref().map_or("", |(u, _)| u.as_str()),
                access,
            );
            (
                "200 OK",
                serde_json::json!({"token": token, "expires_in": 300}).to_string(),
            )
        }
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes())?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// A token as distribution's token authentication reads it: RS256, the
/// signing certificate in `x5c`.
fn jwt(
    signer: &dyn rustls::sign::SigningKey,
    x5c: &str,
    subject: &str,
    access: Vec<serde_json::Value>,
) -> String {
    static IDS: AtomicUsize = AtomicUsize::new(0);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{}-{}", std::process::id(), IDS.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let signed = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let signature = signer
        .choose_scheme(&[rustls::SignatureScheme::RSA_PKCS1_SHA256])
        .expect("an RSA key signs with RS256")
        .sign(signed.as_bytes())
        .expect("a signature");
    format!("{signed}.{}", url.encode(signature))
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A server that accepts connections (the kernel does, into the listen
/// backlog) and never reads or answers: a hung registry.
pub struct Silent {
    pub authority: String,
    _listener: TcpListener,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Silent {
            authority: format!("127.0.0.1:{}", listener.local_addr().unwrap().port()),
            _listener: listener,
        }
    }
}
