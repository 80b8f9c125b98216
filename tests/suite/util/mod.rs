//! The test harness: real graveyards in temporary directories, the built
//! kubexit binary with its stderr captured, and waits that end at a
//! deadline instead of sleeping a fixed time. What only some topics need
//! lives in submodules: the real Kubernetes API server (`k8s`), a pod and
//! its service account there (`cluster_pod`), a recording relay in front of
//! it (`relay`), a fake server for faults the real one cannot show
//! (`fake_apiserver`), loopback TLS (`loopback_tls`), the webhook under test
//! (`webhook`), podman with a store of its own and the images built into it
//! (`podman`), a real node whose kubelet runs pods (`node`), real image
//! registries (`registry`), and the repository's own files (`files`).

#[cfg(feature = "kubernetes")]
pub mod cluster_pod;
#[cfg(feature = "kubernetes")]
pub mod fake_apiserver;
pub mod files;
#[cfg(feature = "kubernetes")]
pub mod k8s;
#[cfg(feature = "kubernetes")]
pub mod loopback_tls;
#[cfg(feature = "webhook")]
pub mod node;
#[cfg(feature = "kubernetes")]
pub mod podman;
#[cfg(feature = "registry")]
pub mod registry;
#[cfg(feature = "kubernetes")]
pub mod relay;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Generous: tests must pass on a loaded 2-core machine. A passing test
/// never waits this long; only a failing one does.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds or `DEADLINE` passes.
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    assert!(holds_in_time(condition), "timed out waiting for {what}");
}

/// Polls `condition` until it holds (true) or `DEADLINE` passes (false).
pub fn holds_in_time(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() >= DEADLINE {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A graveyard in a fresh temporary directory.
pub struct Yard {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Yard {
    pub fn new() -> Yard {
        let dir = tempfile::tempdir().expect("temporary directory");
        Yard {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// A graveyard in a directory of its own: kubexit's watch on the
    /// graveyard's parent sees nothing of other tests' temporary
    /// directories, so nothing but the test wakes it.
    pub fn private() -> Yard {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("graveyard");
        fs::create_dir(&path).expect("graveyard");
        Yard { path, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stone_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a tombstone in place, as Go kubexit does (truncate, write).
    pub fn write(&self, name: &str, content: &str) {
        fs::write(self.stone_path(name), content).expect("write tombstone");
    }

    /// Writes a tombstone atomically, as kubexit does (temp file, rename).
    pub fn rename_into_place(&self, name: &str, content: &str) {
        let temp = self.path.join(format!(".test-{name}"));
        fs::write(&temp, content).expect("write temporary tombstone");
        fs::rename(&temp, self.stone_path(name)).expect("rename tombstone");
    }

    pub fn read(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.stone_path(name)).ok()
    }

    /// Waits until `name`'s tombstone contains `needle`, and returns it.
    pub fn wait_for(&self, name: &str, needle: &str) -> String {
        let mut text = String::new();
        eventually(&format!("tombstone {name} to contain {needle:?}"), || {
            text = self.read(name).unwrap_or_default();
            text.contains(needle)
        });
        text
    }

    /// Kills a dependency the Go way: a tombstone with a Died line.
    pub fn bury(&self, name: &str) {
        self.write(
            name,
            "Born: \"2026-11-24T19:47:53.305407408Z\"\nDied: \"2026-11-24T19:47:53.306705393Z\"\nExitCode: 0\n",
        );
    }
}

/// A kubexit command under construction.
pub struct Kubexit {
    command: Command,
}

/// The kubexit binary under test: the one cargo built, or another build
/// named by `KUBEXIT_TEST_BINARY` (`.ci/run` runs tests again with the
/// static arm64 binary, under qemu-user-static).
pub fn kubexit_binary() -> PathBuf {
    std::env::var_os("KUBEXIT_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kubexit")))
}

pub fn kubexit() -> Kubexit {
    kubexit_at(&kubexit_binary())
}

/// Runs `kubexit ARGS...` to its end, with `input` (if any) on standard
/// input, as a pipeline gives it.
#[cfg(feature = "inject")]
pub fn kubexit_with_input(args: &[&str], input: Option<&str>) -> Finished {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut k = kubexit();
    if let Some(input) = input {
        let path = dir.path().join("input");
        fs::write(&path, input).expect("the input written");
        k.stdin_file(&path);
    }
    k.args(args).run()
}

/// A kubexit command of another build than the one under test (the slim
/// one, say).
pub fn kubexit_at(binary: &Path) -> Kubexit {
    wrapped(Command::new(binary))
}

/// kubexit as PID 1 of a PID namespace of its own, as in a container of a
/// pod (`unshare --pid --fork --mount-proc`; the pid a test sees is
/// unshare's, which dies with it). Needs root: see [`can_unshare_pid`].
pub fn kubexit_pid_1() -> Kubexit {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(kubexit_binary());
    wrapped(command)
}

fn wrapped(mut command: Command) -> Kubexit {
    command.env_clear();
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.stdin(Stdio::null());
    with_default_signals(&mut command);
    Kubexit { command }
}

/// Starts `command` as a container runtime starts a process: every signal
/// at its default disposition. Signals ignored by whatever ran the tests (a
/// shell's `cargo test &` ignores SIGINT and SIGQUIT) would otherwise stay
/// ignored through kubexit, as through any exec, into its child.
pub fn with_default_signals(command: &mut Command) {
    // SAFETY: sigaction is async-signal-safe, and nothing else runs here.
    unsafe {
        command.pre_exec(|| {
            for signal in Signal::iterator() {
                if signal != Signal::SIGKILL && signal != Signal::SIGSTOP {
                    let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
                }
            }
            Ok(())
        });
    }
}

/// Whether this process runs as root (CI does).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { nix::libc::geteuid() == 0 }
}

/// The words that run `sh -c SCRIPT` in a mount namespace of its own: what
/// the script mounts (a small tmpfs, a FUSE file system that never
/// answers) is seen by nothing else and goes with it. Needs root.
pub const PRIVATE_MOUNTS: [&str; 6] =
    ["unshare", "--mount", "--propagation", "private", "sh", "-c"];

/// The line of a [`PRIVATE_MOUNTS`] script that mounts a tmpfs of `size`
/// (such as `64k`) on `dir`, ending the script with status 99 if it cannot.
pub fn mount_tmpfs(dir: &Path, size: &str) -> String {
    format!(
        "mount -t tmpfs -o size={size} tmpfs '{}' || exit 99",
        dir.display()
    )
}

/// Whether kubexit can be made PID 1 of a new PID namespace here.
pub fn can_unshare_pid() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Kubexit {
    /// kubexit named `name`, in `yard`, with a short grace period so that
    /// a test that fails does not hang.
    pub fn named(name: &str, yard: &Yard) -> Kubexit {
        let mut k = kubexit();
        k.configure(name, yard);
        k
    }

    /// Like [`Kubexit::named`], as PID 1 of its own PID namespace.
    pub fn pid_1(name: &str, yard: &Yard) -> Kubexit {
        let mut k = kubexit_pid_1();
        k.configure(name, yard);
        k
    }

    /// Names it `name`, in `yard`, with a short grace period.
    pub fn configure(&mut self, name: &str, yard: &Yard) {
        self.env("KUBEXIT_NAME", name)
            .env("KUBEXIT_GRAVEYARD", yard.path())
            .env("KUBEXIT_GRACE_PERIOD", "10s");
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Kubexit {
        self.command.env(key, value);
        self
    }

    #[cfg(any(feature = "kubernetes", feature = "inject"))]
    pub fn env_remove(&mut self, key: &str) -> &mut Kubexit {
        self.command.env_remove(key);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Kubexit
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn arg_path(&mut self, path: &Path) -> &mut Kubexit {
        self.command.arg(path);
        self
    }

    pub fn stdin_file(&mut self, path: &Path) -> &mut Kubexit {
        self.command
            .stdin(fs::File::open(path).expect("stdin file"));
        self
    }

    /// The command to supervise, run by `sh -c`.
    pub fn sh(&mut self, script: &str) -> &mut Kubexit {
        self.args(["sh", "-c", script])
    }

    /// Runs code in the forked process before kubexit is executed.
    pub fn before_exec(
        &mut self,
        hook: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> &mut Kubexit {
        // SAFETY: tests only pass hooks that make async-signal-safe calls.
        unsafe {
            self.command.pre_exec(hook);
        }
        self
    }

    pub fn spawn(&mut self) -> Running {
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("spawn kubexit");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Running {
            child,
            stdout,
            stderr,
            stderr_reader: None,
        }
    }

    /// Spawns with stderr going to a pipe whose reader the test holds and
    /// can close ([`Running::close_stderr`]), as a log pipeline that goes
    /// away. Until then what kubexit writes there is collected.
    pub fn spawn_with_closable_stderr(&mut self) -> Running {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        // Non-blocking, so that the collector never holds the lock in a
        // read and the test can close the pipe at any time.
        nix::fcntl::fcntl(
            &reader,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("non-blocking pipe");
        self.command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(writer));
        let mut child = self.command.spawn().expect("spawn kubexit");
        // Only kubexit holds the writing end now.
        self.command.stderr(Stdio::null());
        let stdout = collect(child.stdout.take().expect("stdout"));
        let reader = Arc::new(Mutex::new(Some(fs::File::from(reader))));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (source, sink) = (Arc::clone(&reader), Arc::clone(&stderr));
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                let read = {
                    let guard = source.lock().unwrap();
                    let Some(file) = guard.as_ref() else { break };
                    (&*file).read(&mut buffer)
                };
                match read {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n])),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Running {
            child,
            stdout,
            stderr,
            stderr_reader: Some(reader),
        }
    }

    /// Runs to completion and returns (status, stdout, stderr).
    pub fn run(&mut self) -> Finished {
        self.spawn().finish()
    }

    /// Like `run`, with the first argument as the program instead of
    /// kubexit (for wrappers such as setpriv or unshare that exec it).
    pub fn run_self(&mut self) -> Finished {
        self.unwrap_program();
        self.run()
    }

    /// Like `spawn`, with the first argument as the program (see
    /// [`Kubexit::run_self`]).
    pub fn spawn_self(&mut self) -> Running {
        self.unwrap_program();
        self.spawn()
    }

    fn unwrap_program(&mut self) {
        let mut args = self.command.get_args().map(|a| a.to_owned());
        let Some(program) = args.next() else {
            return;
        };
        let mut wrapped = Command::new(program);
        wrapped.args(args).env_clear().stdin(Stdio::null());
        for (key, value) in self.command.get_envs() {
            if let Some(value) = value {
                wrapped.env(key, value);
            }
        }
        self.command = wrapped;
    }
}

fn collect(mut source: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = source.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

/// A running kubexit.
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The reading end of stderr, for [`Kubexit::spawn_with_closable_stderr`].
    stderr_reader: Option<Arc<Mutex<Option<fs::File>>>>,
}

/// A finished kubexit.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics (with the log) if kubexit died of a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!(
                "kubexit was killed by signal {:?}\n{}",
                self.status.signal(),
                self.stderr
            ),
        }
    }
}

impl Running {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until kubexit's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        eventually(&format!("log line {needle:?}"), || {
            self.stderr().contains(needle)
        });
    }

    /// Waits until the child's output contains `needle`.
    pub fn wait_for_output(&self, needle: &str) {
        eventually(&format!("output {needle:?}"), || {
            self.stdout().contains(needle)
        });
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal kubexit");
    }

    /// Closes the reading end of kubexit's stderr: its next write finds no
    /// reader.
    pub fn close_stderr(&self) {
        let reader = self.stderr_reader.as_ref().expect("a closable stderr");
        reader.lock().unwrap().take();
    }

    /// Waits for kubexit to exit; kills it and fails after the deadline.
    pub fn finish(mut self) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("kubexit did not exit in time\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(5));
        };
        // The readers finish when the pipes close; the child may have left
        // them open in a leftover process, so do not wait forever.
        let closed = Instant::now();
        // Both readers: a reader of one pipe may lag behind the other's.
        while (Arc::strong_count(&self.stderr) > 1 || Arc::strong_count(&self.stdout) > 1)
            && closed.elapsed() < Duration::from_secs(2)
        {
            thread::sleep(Duration::from_millis(5));
        }
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Running {
    /// A kubexit a test leaves running (it failed before `finish`, or it
    /// had no more to show) must not outlive the test, nor leave its child
    /// running as an orphan: kubexit is killed, then the process groups of
    /// its children (a SIGKILLed kubexit cannot stop them itself).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let children = children_of(self.pid());
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
            for child in children {
                let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
                let _ = kill(child, Signal::SIGKILL);
            }
        }
    }
}

/// The children of `pid`, from the kernel's per-thread lists.
fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a process exists (a zombie counts as existing).
pub fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// Field `number` of `/proc/PID/stat`, numbered as proc(5) numbers them
/// (3 is the state, 19 the nice level); `pid` may be `self`. `None` when
/// the process is gone. Fields are counted from the last `)`, since the
/// command name before it may hold spaces and parentheses.
pub fn stat_field(pid: &str, number: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(number.checked_sub(3)?)
        .map(str::to_owned)
}

/// Reads a pid that a test child wrote to a file.
pub fn read_pid(path: &Path) -> Pid {
    let mut text = String::new();
    eventually(&format!("pid file {}", path.display()), || {
        text = fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    Pid::from_raw(text.trim().parse().expect("pid"))
}

/// A real HTTP/1.1 server on loopback whose answer can be changed while it
/// runs: each connection gets the status currently set, then is closed.
pub struct HttpServer {
    pub port: u16,
    status: Arc<Mutex<u16>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start(initial_status: u16) -> HttpServer {
        HttpServer::on(
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
            initial_status,
        )
    }

    /// A server on a listener the test bound (on a port it chose, at the
    /// moment it chose).
    pub fn on(listener: std::net::TcpListener, initial_status: u16) -> HttpServer {
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(Mutex::new(initial_status));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (answer, log) = (Arc::clone(&status), Arc::clone(&requests));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match std::io::Read::read(&mut stream, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let request = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(request);
                let code = *answer.lock().unwrap();
                let reply = format!(
                    "HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = std::io::Write::write_all(&mut stream, reply.as_bytes());
            }
        });
        HttpServer {
            port,
            status,
            requests,
        }
    }

    pub fn set_status(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A loopback port that nothing listens on yet (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

/// Whether this run is CI's: `.ci/run` sets `KUBEXIT_CI=1`. There, a test
/// of the shape users run (real containers, the real API server, the Go
/// peer) never skips: a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var_os("KUBEXIT_CI").is_some_and(|v| v == "1")
}

/// The directory `../shared` beside the checkout (peers: the Go kubexit,
/// the floor, the Kubernetes API server; Go's tombstones), or where
/// `KUBEXIT_SHARED` points.
#[cfg(feature = "kubernetes")]
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KUBEXIT_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    dir.join("peers").is_dir().then_some(dir)
}

/// Says clearly that `test` is skipped and why, and returns; under CI
/// (`KUBEXIT_CI=1`) a skip is a failure instead.
pub fn skip(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: cannot run under CI: {why}");
    // Straight to the descriptor: the test harness captures eprintln!,
    // and a skip must be seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
}

/// The masks of `pid`'s inotify watches on the inode `inode`.
pub fn watch_masks(pid: i32, inode: u64) -> Vec<u32> {
    let mut masks = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return masks;
    };
    for fd in fds.flatten() {
        let text = std::fs::read_to_string(fd.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("inotify ")) {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(key))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            if field("ino:") == Some(inode)
                && let Some(mask) = field("mask:")
            {
                masks.push(mask as u32);
            }
        }
    }
    masks
}

/// Where the kernel says `pid` sleeps; `None` when it does not say.
pub fn wait_channel(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    (!text.is_empty() && text != "0").then_some(text)
}

/// Whether `pid` sleeps (interruptibly): it has done what it was woken
/// for, and waits for more.
pub fn asleep(pid: i32) -> bool {
    stat_field(&pid.to_string(), 3).is_some_and(|state| state == "S")
}

/// Whether `pid` sleeps in `poll(2)` (the supervisor at rest), not in an
/// `epoll_wait` (the runtime) and not running.
pub fn at_rest(pid: i32) -> bool {
    let channel = wait_channel(pid).unwrap_or_default();
    asleep(pid)
        && channel.contains("poll")
        && !channel.contains("epoll")
        && !channel.contains("ep_poll")
}

/// How many times `pid`'s main thread has gone to sleep.
pub fn voluntary_switches(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the kernel names `pid`'s wait channel, by which [`at_rest`]
/// sees the loop's rest; if not, `test` is skipped, and says so. A running
/// process names none, and one seen asleep may be running again when its
/// channel is read (under qemu, often): only a kernel that never names one
/// while `pid` sleeps, until the deadline, hides it.
pub fn rest_is_seen(test: &str, pid: i32) -> bool {
    let seen = holds_in_time(|| asleep(pid) && wait_channel(pid).is_some());
    if !seen {
        skip(
            test,
            "this kernel does not name the wait channel in /proc/PID/wchan",
        );
    }
    seen
}

/// Fails, showing `text` whole, unless it contains `needle`.
#[track_caller]
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

/// Fails, showing `text` whole, if it contains `needle`.
#[track_caller]
pub fn assert_lacks(text: &str, needle: &str) {
    assert!(
        !text.contains(needle),
        "did not expect {needle:?} in:\n{text}"
    );
}
