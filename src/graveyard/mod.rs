//! The graveyard: the shared directory where tombstones live.
//!
//! Every container of a pod can write here, so the graveyard treats the
//! directory as shared with strangers:
//!
//! * **Reads are bounded and never follow links.** A tombstone is opened
//!   with `O_NOFOLLOW | O_NONBLOCK`, must be a regular file (not a FIFO that
//!   would block, a device, or a directory), and only the first
//!   [`MAX_TOMBSTONE_BYTES`] are ever read. Names are [`Name`]s, which cannot
//!   contain `/` or start with `.`, so no path leaves the directory.
//! * **Writes are atomic.** A tombstone is written to a fresh dot-file in the
//!   graveyard (`O_EXCL | O_NOFOLLOW`, so a planted link is never written
//!   through) and renamed over the old one: readers see the old record or the
//!   new one, never half of one. Go peers see the rename as a create event.
//! * **Watching is event-driven.** [`Watch`] wraps one inotify instance on
//!   the directory; it wakes only when an entry is written, renamed into
//!   place or created, and says which. When the kernel's event queue
//!   overflows, it says so, and the caller rescans. The directory's parent is
//!   watched too, for the directory's own removal: kubexit's open lock file
//!   pins the directory, which delays the kernel's "deleted" event on it.
//! * **Never stuck without events.** inotify instances are limited per user
//!   (128 by default), and a pod with hundreds of kubexits under one uid can
//!   run out. Then the watch falls back to reading the graveyard every
//!   [`POLL_EVERY`], with a warning naming the sysctl to raise; slower to
//!   react, never blind.
//!
//! What a tombstone means is the tombstone module's business; which names
//! matter is the supervisor's.

pub mod liveness;
pub mod name;
pub mod tombstone;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use jiff::tz::TimeZone;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::graveyard::name::Name;
use crate::graveyard::tombstone::{ParseError, Tombstone};

/// Tombstones are a few hundred bytes; anything beyond this is not one.
pub const MAX_TOMBSTONE_BYTES: u64 = 64 * 1024;

/// The shared directory, and the time zone tombstones are written in.
#[derive(Debug, Clone)]
pub struct Graveyard {
    dir: PathBuf,
    zone: TimeZone,
}

/// Why the graveyard itself cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GraveyardError {
    #[error(
        "cannot create the graveyard {dir:?}: {source}; check that the parent exists and is writable, or mount a volume there"
    )]
    Create { dir: PathBuf, source: io::Error },
    #[error("the graveyard {dir:?} is not a directory; point KUBEXIT_GRAVEYARD at a directory")]
    NotADirectory { dir: PathBuf },
    #[error("cannot watch the graveyard {dir:?}: {source}")]
    Watch { dir: PathBuf, source: io::Error },
}

/// Why one tombstone could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is a symbolic link, which kubexit never follows")]
    Symlink,
    #[error("it is a {0}, not a regular file")]
    NotAFile(&'static str),
    #[error("it is larger than {MAX_TOMBSTONE_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Unparsable(#[from] ParseError),
    #[error("{0}")]
    Io(io::Error),
}

/// Why a tombstone could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the tombstone {path:?}: {source}{hint}", hint = write_hint(source))]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn write_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(nix::libc::ENOSPC) => "; the graveyard's filesystem is full",
        Some(nix::libc::EROFS) => "; the graveyard is mounted read-only",
        Some(nix::libc::EACCES | nix::libc::EPERM) => {
            "; kubexit needs write permission on the graveyard directory"
        }
        Some(nix::libc::ENOENT) => "; the graveyard directory was removed",
        _ => "",
    }
}

/// Creates `dir` (and its parents) if missing; it must end up a directory.
fn create(dir: &Path) -> Result<(), GraveyardError> {
    if let Err(source) = fs::create_dir_all(dir) {
        return Err(if dir.exists() && !dir.is_dir() {
            GraveyardError::NotADirectory { dir: dir.into() }
        } else {
            GraveyardError::Create {
                dir: dir.into(),
                source,
            }
        });
    }
    if !dir.is_dir() {
        return Err(GraveyardError::NotADirectory { dir: dir.into() });
    }
    Ok(())
}

impl Graveyard {
    /// Opens the graveyard at `dir`, creating it (and its parents) if missing.
    pub fn open(dir: &Path) -> Result<Graveyard, GraveyardError> {
        create(dir)?;
        Ok(Graveyard {
            dir: dir.to_path_buf(),
            zone: crate::graveyard::tombstone::local_zone(),
        })
    }

    /// Creates the directory again after it was removed while kubexit ran.
    pub fn recreate(&self) -> Result<(), GraveyardError> {
        create(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name`'s tombstone lives.
    pub fn path_of(&self, name: &Name) -> PathBuf {
        self.dir.join(name.as_str())
    }

    /// Where `name`'s liveness lock lives (see the liveness module): a
    /// dot-file, so no tombstone can collide with it. Too long a name for
    /// the extra characters is an error.
    pub fn lock_path(&self, name: &Name) -> io::Result<PathBuf> {
        let file = format!(".{name}.lock");
        if file.len() > 255 {
            return Err(io::Error::from_raw_os_error(nix::libc::ENAMETOOLONG));
        }
        Ok(self.dir.join(file))
    }

    /// Reads `name`'s tombstone: `Ok(None)` if there is none yet.
    pub fn read(&self, name: &Name) -> Result<Option<Tombstone>, ReadError> {
        let path = self.path_of(name);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(&path);
        let file = match file {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(ReadError::Symlink);
            }
            Err(err) => return Err(ReadError::Io(err)),
        };
        let bytes = read_bounded(file)?;
        Ok(Some(Tombstone::parse(&bytes)?))
    }

    /// Replaces `name`'s tombstone atomically with `stone`.
    ///
    /// A graveyard removed since it was opened is created again first, so
    /// that a kubexit without dependencies (which does not watch the
    /// graveyard) still leaves its record.
    pub fn write(&self, name: &Name, stone: &Tombstone) -> Result<(), WriteError> {
        let path = self.path_of(name);
        let text = stone.render(&self.zone);
        let attempt = || {
            let temp = self.dir.join(temporary_name());
            write_new(&temp, text.as_bytes())
                .and_then(|()| fs::rename(&temp, &path))
                .inspect_err(|_| {
                    let _ = fs::remove_file(&temp);
                })
        };
        let mut result = attempt();
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) && !self.dir.exists() {
            tracing::warn!(
                "the graveyard {} was removed; creating it again",
                self.dir.display()
            );
            if self.recreate().is_ok() {
                result = attempt();
            }
        }
        result.map_err(|source| WriteError { path, source })
    }

    /// Starts watching the directory for tombstone changes; falls back to
    /// polling when the kernel's inotify limits are reached.
    pub fn watch(&self) -> Result<Watch, GraveyardError> {
        match self.watch_events() {
            Ok(mode) => Ok(Watch { mode }),
            Err(err) if is_limit(&err) => {
                tracing::warn!(
                    "cannot watch the graveyard {} with inotify ({err}); reading it every {} \
                     instead: raise the sysctl fs.inotify.max_user_instances (or max_user_watches) \
                     for immediate reactions",
                    self.dir.display(),
                    crate::duration::GoDuration(POLL_EVERY)
                );
                Ok(Watch {
                    mode: Mode::Polling {
                        dir: self.dir.clone(),
                        next: Instant::now(),
                    },
                })
            }
            Err(source) => Err(GraveyardError::Watch {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    fn watch_events(&self) -> io::Result<Mode> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY
            | WatchMask::MOVED_TO
            | WatchMask::CREATE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        let dir = inotify.watches().add(&self.dir, mask)?;
        // The parent is watched for the directory's own removal only; it
        // may be unreadable, which only loses that.
        let absolute = fs::canonicalize(&self.dir)?;
        let parent = absolute
            .parent()
            .zip(absolute.file_name())
            .and_then(|(parent, name)| {
                let mask = WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::ONLYDIR;
                let wd = inotify.watches().add(parent, mask).ok()?;
                Some((wd, name.to_os_string()))
            });
        // SAFETY: the Inotify value owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(inotify) }.map_err(io::Error::from)?;
        Ok(Mode::Events {
            fd,
            buffer: vec![0; 16 * 1024],
            dir,
            parent,
        })
    }
}

/// Whether an inotify error is one of the kernel's per-user limits.
fn is_limit(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOSPC | nix::libc::ENOMEM)
    )
}

/// Reads at most [`MAX_TOMBSTONE_BYTES`] from a regular file.
fn read_bounded(file: File) -> Result<Vec<u8>, ReadError> {
    let kind = file.metadata().map_err(ReadError::Io)?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotAFile(if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "named pipe"
        } else if kind.is_socket() {
            "socket"
        } else {
            "device"
        }));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOMBSTONE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_TOMBSTONE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// A dot-name unique to this process and write: dot-files are reserved for
/// kubexit (no [`Name`] starts with a dot), and the name does not embed the
/// tombstone's name, so it stays short whatever the name's length.
fn temporary_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".kubexit-{}-{n}.tmp", std::process::id())
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW);
    let mut file = match options.open(path) {
        Ok(file) => file,
        // A stale file from an earlier kubexit with the same pid.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            options.open(path)?
        }
        Err(err) => return Err(err),
    };
    file.write_all(bytes)
}

/// How often the graveyard is read when inotify is not available.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// A change in the graveyard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry with this file name was written, created or renamed into
    /// place. It may or may not be a valid name; the caller filters.
    Entry(OsString),
    /// Events were lost: every tombstone of interest must be read again.
    Overflow,
    /// A polling tick: every tombstone of interest must be read again.
    Tick,
    /// The graveyard directory itself was removed or moved away.
    Gone,
}

/// A watch on the graveyard, readable in the event loop.
pub struct Watch {
    mode: Mode,
}

enum Mode {
    Events {
        fd: AsyncFd<Inotify>,
        buffer: Vec<u8>,
        /// The graveyard's watch.
        dir: WatchDescriptor,
        /// The parent's watch and the graveyard's name in it.
        parent: Option<(WatchDescriptor, OsString)>,
    },
    Polling {
        dir: PathBuf,
        next: Instant,
    },
    /// No longer interested: nothing arrives. The inotify instance, if
    /// any, stays open, since closing it waits for the kernel.
    Quiet {
        _fd: Option<AsyncFd<Inotify>>,
    },
}

impl Watch {
    /// Closes the watch (its inotify instance, if any) before a new one is
    /// made; until then it only polls.
    pub fn close(&mut self) {
        self.mode = Mode::Polling {
            dir: PathBuf::new(),
            next: Instant::now() + POLL_EVERY,
        };
    }

    /// Stops listening for good, cheaply: the kernel stops queueing events
    /// for this watch (so other processes' writes no longer wake kubexit),
    /// and the marks are released in the background; the instance itself
    /// is closed at exit. [`Watch::next`] then never returns.
    pub fn quiet(&mut self) {
        let mode = std::mem::replace(&mut self.mode, Mode::Quiet { _fd: None });
        if let Mode::Events {
            mut fd,
            dir,
            parent,
            ..
        } = mode
        {
            let mut watches = fd.get_mut().watches();
            let _ = watches.remove(dir);
            if let Some((wd, _)) = parent {
                let _ = watches.remove(wd);
            }
            self.mode = Mode::Quiet { _fd: Some(fd) };
        }
    }

    /// Waits for the next batch of changes. Entries are de-duplicated within
    /// a batch, and kubexit's own dot-files are left out.
    pub async fn next(&mut self) -> io::Result<Vec<Change>> {
        match &mut self.mode {
            Mode::Events {
                fd, buffer, parent, ..
            } => next_events(fd, buffer, parent.as_ref()).await,
            Mode::Quiet { .. } => std::future::pending().await,
            Mode::Polling { dir, next } => {
                tokio::time::sleep_until(*next).await;
                *next = Instant::now() + POLL_EVERY;
                Ok(vec![if dir.is_dir() {
                    Change::Tick
                } else {
                    Change::Gone
                }])
            }
        }
    }
}

async fn next_events(
    fd: &mut AsyncFd<Inotify>,
    buffer: &mut [u8],
    parent: Option<&(WatchDescriptor, OsString)>,
) -> io::Result<Vec<Change>> {
    loop {
        let mut guard = fd.readable_mut().await?;
        let events = match guard.get_inner_mut().read_events(buffer) {
            Ok(events) => events,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                continue;
            }
            Err(err) => return Err(err),
        };
        let mut changes: Vec<Change> = Vec::new();
        for event in events {
            let change = if event.mask.contains(EventMask::Q_OVERFLOW) {
                Change::Overflow
            } else if let Some((_, own_name)) = parent.filter(|(wd, _)| *wd == event.wd) {
                if event.name != Some(own_name.as_os_str()) {
                    continue;
                }
                Change::Gone
            } else if event
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
            {
                Change::Gone
            } else if let Some(name) = event.name {
                if name.as_encoded_bytes().starts_with(b".") {
                    continue;
                }
                Change::Entry(name.to_os_string())
            } else {
                continue;
            };
            if !changes.contains(&change) {
                changes.push(change);
            }
        }
        if !changes.is_empty() {
            return Ok(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(&dir.path().join("nested/yard")).unwrap();
        let name = Name::new("app").unwrap();
        assert!(graveyard.read(&name).unwrap().is_none());
        let stone = Tombstone {
            born: Some(jiff::Timestamp::now()),
            ..Tombstone::default()
        };
        graveyard.write(&name, &stone).unwrap();
        graveyard.write(&name, &stone).unwrap();
        assert_eq!(graveyard.read(&name).unwrap(), Some(stone));
        let entries: Vec<_> = fs::read_dir(graveyard.dir()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn symlinks_fifos_directories_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        let secret = dir.path().join("outside");
        fs::write(&secret, "Died: \"2026-01-01T00:00:00Z\"\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        fs::write(dir.path().join("huge"), vec![b'#'; 70_000]).unwrap();

        let read = |n: &str| graveyard.read(&Name::new(n).unwrap());
        assert!(matches!(read("link"), Err(ReadError::Symlink)));
        assert!(matches!(
            read("fifo"),
            Err(ReadError::NotAFile("named pipe"))
        ));
        assert!(matches!(read("dir"), Err(ReadError::NotAFile("directory"))));
        assert!(matches!(read("huge"), Err(ReadError::TooLarge)));
    }
}
