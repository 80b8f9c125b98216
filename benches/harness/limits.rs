//! The kernel's inotify limits, raised for a measurement and restored
//! after, and what a fleet of supervisors holds against them.
//!
//! Every supervisor that watches the graveyard holds one inotify instance
//! and a few watches, charged to its user: `fs.inotify.max_user_instances`
//! (128 by default) and `fs.inotify.max_user_watches` bound how many can
//! watch at once under one uid. When a measurement needs more than the
//! machine allows, the harness raises the limit if it may (root) and puts
//! the old value back when the [`Raised`] guard is dropped (`bench/run`
//! also restores both if the harness is interrupted). It only ever raises:
//! lowering a limit could break other programs running on the machine.
//! When it may not raise, it says so, and the supervisors beyond the limit
//! do what they do without inotify (kubexit polls; the floor and the Go
//! kubexit cannot watch at all).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The user a root harness runs every supervisor as: a uid no process
/// uses and no file belongs to.
pub const FLEET_UID: u32 = 64_123;

pub const MAX_USER_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";
pub const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// A sysctl's short name, for messages: `fs.inotify.max_user_instances`.
pub fn sysctl_name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

/// Limits raised for one measurement; restored when dropped.
pub struct Raised {
    /// Each sysctl raised, with the value to write back.
    restore: Vec<(&'static str, u64)>,
    /// What was done, or could not be done, in words.
    pub notes: Vec<String>,
    /// Whether every need is met (already, or once raised).
    pub enough: bool,
}

/// What a fleet is about to need, beyond what its user holds already.
pub struct Need {
    /// The user the fleet runs as.
    pub uid: u32,
    pub instances: usize,
    pub watches: usize,
    /// For the notes: `200 dependents`.
    pub why: String,
}

impl Raised {
    /// Makes room for `need` if it can.
    pub fn ensure(need: &Need) -> Raised {
        let mut raised = Raised {
            restore: Vec::new(),
            notes: Vec::new(),
            enough: true,
        };
        let usage = user_usage(need.uid);
        // A margin for the rest of the machine (editors, build tools, other
        // test runs) starting instances during the measurement.
        let margin = 32;
        for (path, in_use, wanted) in [
            (MAX_USER_INSTANCES, usage.instances, need.instances),
            (MAX_USER_WATCHES, usage.watches, need.watches),
        ] {
            if wanted == 0 {
                continue;
            }
            let Some(current) = read_number(Path::new(path)) else {
                continue;
            };
            let needed = (in_use + wanted + margin) as u64;
            if current >= needed {
                continue;
            }
            let name = sysctl_name(path);
            let value = needed.next_multiple_of(256);
            match fs::write(path, value.to_string()) {
                Ok(()) => {
                    raised.restore.push((path, current));
                    raised.notes.push(format!(
                        "raised {name} from {current} to {value} for {} ({in_use} already in use \
                         by its user), restored after",
                        need.why
                    ));
                }
                Err(err) => {
                    raised.enough = false;
                    raised.notes.push(format!(
                        "{name} is {current} ({in_use} in use by its user) and cannot be raised \
                         for {} ({err}); run as root to raise it",
                        need.why
                    ));
                }
            }
        }
        raised
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        for (path, value) in self.restore.drain(..) {
            if let Err(err) = fs::write(path, value.to_string()) {
                eprintln!("warning: cannot restore {path} to {value}: {err}");
            }
        }
    }
}

pub fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// inotify instances and watches held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: usize,
    pub watches: usize,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.instances += other.instances;
        self.watches += other.watches;
    }
}

/// What one process holds: its inotify descriptors, and the watches each
/// lists in /proc/PID/fdinfo.
pub fn process_usage(pid: i32) -> Usage {
    let mut usage = Usage::default();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return usage;
    };
    for fd in fds.flatten() {
        let is_inotify =
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:inotify");
        if !is_inotify {
            continue;
        }
        usage.instances += 1;
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        usage.watches += fs::read_to_string(info)
            .map(|text| {
                text.lines()
                    .filter(|line| line.starts_with("inotify wd:"))
                    .count()
            })
            .unwrap_or(0);
    }
    usage
}

/// The user to run the supervisors as. As root, [`FLEET_UID`], so that
/// their inotify instances are charged to that user alone: other programs
/// on the machine (a test suite running beside the benchmark, say) can
/// neither exhaust the instances the subjects need (the floor and the Go
/// kubexit cannot run without one) nor be starved by a fleet of 1,000.
/// `programs` must be executable by that user (checked with `test -x`, run
/// as that user) and `dirs` are opened to it (mode 0755). `None`, with a note, when not root
/// or when that user cannot be used.
pub fn fleet_user(programs: &[&Path], dirs: &[&Path], notes: &mut Vec<String>) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if own_uid() != 0 {
        notes.push(
            "not root: the supervisors run as the harness's user, and share its inotify \
             instances with every other program of that user"
                .to_owned(),
        );
        return None;
    }
    if user_usage(FLEET_UID) != Usage::default() || crate::procs::user_has_processes(FLEET_UID) {
        notes.push(format!(
            "uid {FLEET_UID} is in use on this machine: the supervisors run as root instead"
        ));
        return None;
    }
    for dir in dirs {
        if let Err(err) = fs::set_permissions(dir, fs::Permissions::from_mode(0o755)) {
            notes.push(format!(
                "cannot open {} to uid {FLEET_UID} ({err}): the supervisors run as root instead",
                dir.display()
            ));
            return None;
        }
    }
    for program in programs {
        let runs = std::process::Command::new("sh")
            .arg("-c")
            .arg("test -x \"$1\"")
            .arg("sh")
            .arg(program)
            .uid(FLEET_UID)
            .gid(FLEET_UID)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            notes.push(format!(
                "uid {FLEET_UID} cannot run {} (a directory above it closed to others?): the \
                 supervisors run as root instead",
                crate::paths::shown(program)
            ));
            return None;
        }
    }
    notes.push(format!(
        "every supervisor and its child ran as uid {FLEET_UID}, which no other process uses, so \
         that their inotify instances were charged to it alone"
    ));
    Some(FLEET_UID)
}

/// The harness's own user.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() }
}

/// What every process of user `uid` holds.
pub fn user_usage(uid: u32) -> Usage {
    let mut usage = Usage::default();
    let Ok(processes) = fs::read_dir("/proc") else {
        return usage;
    };
    for process in processes.flatten() {
        let path = process.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fs::metadata(&path).is_ok_and(|m| m.uid() == uid) {
            usage += process_usage(pid);
        }
    }
    usage
}
