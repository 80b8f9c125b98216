//! kubexit under an interactive terminal: the child gets the terminal's
//! foreground, so it can read from it and Ctrl-C reaches it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, Yard, eventually, with_default_signals};

/// kubexit as the session leader of a fresh pseudo-terminal, as a shell
/// would run it in the foreground.
struct OnTerminal {
    master: File,
    screen: Arc<Mutex<String>>,
    child: std::process::Child,
}

fn on_terminal(yard: &Yard, script: &str) -> OnTerminal {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut command = Command::new(crate::util::kubexit_binary());
    command
        .env("KUBEXIT_NAME", "app")
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .args(["sh", "-c", script])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    with_default_signals(&mut command);
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn kubexit on a terminal");
    let master = File::from(pty.master);
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&screen);
    let mut reader = master.try_clone().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        // EIO ends the loop once the last slave descriptor closes.
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    OnTerminal {
        master,
        screen,
        child,
    }
}

impl OnTerminal {
    fn wait_for(&self, needle: &str) {
        eventually(&format!("{needle:?} on the terminal"), || {
            self.screen.lock().unwrap().contains(needle)
        });
    }

    fn exit_code(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("kubexit did not exit: {}", self.screen.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn under_a_terminal_the_child_can_read_it_and_ctrl_c_stops_it() {
    let yard = Yard::new();
    let mut term = on_terminal(
        &yard,
        "echo ready; read line; echo \"got $line\"; exec sleep 1000",
    );
    assert!(term.master.as_raw_fd() >= 0);
    term.wait_for("ready");
    term.master.write_all(b"hello\n").unwrap();
    term.wait_for("got hello");
    // Ctrl-C: the terminal sends SIGINT to its foreground process group.
    term.master.write_all(&[0x03]).unwrap();
    assert_eq!(term.exit_code(), Some(130));
    assert!(yard.read("app").unwrap().contains("ExitCode: 130\n"));
}
