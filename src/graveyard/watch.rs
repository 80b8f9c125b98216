//! Watching the graveyard: woken by what concerns this kubexit, and, once
//! every dependency has a tombstone, only by that.
//!
//! A graveyard may hold hundreds of tombstones, and every kubexit of a pod
//! writes its own twice or more. Watching the directory would wake every
//! kubexit for every sibling's write. So [`Watch`] watches the *files* of
//! the names it is given: each dependency's tombstone (modified, closed
//! after writing, or replaced: a rename over it changes the old file's link
//! count, `IN_ATTRIB`, or deletes it) and its liveness lock (closed by a
//! writer: the holder's descriptor closes when the holder dies, however it
//! dies). The directory itself is watched only while some dependency has no
//! tombstone yet (or one this kubexit may not watch), to see it appear, and
//! then only for entries made: created
//! (Go's writes, in place, and kubexit's temporary files) or renamed into
//! place (kubexit's writes); the file watch armed on the new tombstone then
//! sees its writes. A sibling's birth costs a kubexit still waiting for a
//! dependency to appear two or three wake-ups (the creation of its lock
//! file and of its temporary file, and the rename, some of them read
//! together) and no read: the name is matched in the event. Once every
//! dependency has a tombstone, a sibling that is not a dependency costs
//! nothing.
//!
//! Those two events are also what keeps the directory watch cheap to set:
//! they are events *of the directory*. Asking for an event of the files in
//! it (a write, a close) makes the kernel mark every entry of the directory
//! as watched when the watch is added: 1.2 ms in a graveyard of ten
//! thousand tombstones, measured, which delayed the child's start even when
//! the watch was set after the child was spawned.
//!
//! **No change is missed.** The caller [`arm`](Watch::arm)s a name *before*
//! it reads the tombstone: a change after the arming fires on the file
//! armed, a change before it is in what the caller reads. Since a
//! replacement is a new file, every change to a tombstone leads the caller
//! to read it and arm it again, which moves the watch to the new file. A
//! tombstone that disappears puts the directory watch back before the name
//! is looked for again.
//!
//! **Never blind.** inotify instances and watches are limited per user
//! (`fs.inotify.max_user_instances`, 128 by default, and
//! `max_user_watches`), and a pod with hundreds of kubexits under one uid
//! can run out. When an instance or a watch cannot be had, or reading
//! events fails, the watch falls back to polling: it says everything may
//! have changed every [`POLL_EVERY`], with a warning naming the sysctl to
//! raise. Slower to react, never blind. When the kernel's event queue
//! overflows, it says everything may have changed, too.
//!
//! The graveyard's own removal is seen through a watch on its parent
//! directory, and by the dependency files disappearing with it.
//!
//! Changes are had two ways, decoded alike: [`Watch::next`] waits for them
//! in the runtime, and [`Watch::now`] takes what is queued, for a caller
//! that waits on [`Watch::fd`] itself (the supervisor at rest).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::duration::GoDuration;
use crate::graveyard::Graveyard;
use crate::graveyard::name::Name;

/// How often the graveyard is read when inotify is not available.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// A change that concerns one of the watched names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This name's tombstone may have changed (or appeared, or gone): arm
    /// and read it again.
    Stone(Name),
    /// This name's liveness lock was closed by a writer: its holder may be
    /// gone.
    Lock(Name),
    /// Anything may have changed (events were lost, or a polling tick):
    /// arm and read every name again.
    Everything,
    /// The graveyard directory itself was removed or moved away.
    Gone,
}

/// The watch on the dependencies of one kubexit.
pub struct Watch {
    dir: PathBuf,
    names: Vec<Name>,
    stones: Vec<PathBuf>,
    locks: Vec<Option<PathBuf>>,
    mode: Mode,
    /// The graveyard was found missing while arming: said by the next
    /// [`Watch::next`].
    gone: bool,
}

enum Mode {
    Events(Box<Events>),
    Polling {
        next: Instant,
    },
    /// Nothing arrives: no names to watch, or no longer interested. The
    /// inotify instance, if any, stays open: closing one waits for the
    /// kernel, which a kubexit on its way out should not.
    Quiet {
        _fd: Option<AsyncFd<Inotify>>,
    },
}

/// What one watched file stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Stone(usize),
    Lock(usize),
}

struct Events {
    fd: AsyncFd<Inotify>,
    buffer: Vec<u8>,
    marks: Marks,
}

/// What each watch descriptor of an instance stands for.
struct Marks {
    /// The directory's watch, while some tombstone is missing.
    dir: Option<WatchDescriptor>,
    /// The parent's watch and the graveyard's name in it.
    parent: Option<(WatchDescriptor, OsString)>,
    /// Each watched file's descriptor and what it stands for: a few per
    /// dependency, looked through in order (no hashing on the way from an
    /// event to the stop signal).
    targets: Vec<(WatchDescriptor, Vec<Target>)>,
    stones: Vec<Option<WatchDescriptor>>,
    locks: Vec<Option<WatchDescriptor>>,
    /// Per name: its tombstone could not be watched (not there yet, or not
    /// ours to watch), so the directory must be.
    missing: Vec<bool>,
}

const STONE_MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DONT_FOLLOW);
const LOCK_MASK: WatchMask = WatchMask::CLOSE_WRITE.union(WatchMask::DONT_FOLLOW);
/// Events of the directory only: no event of the files in it (see the
/// module's essay).
const DIR_MASK: WatchMask = WatchMask::MOVED_TO
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

impl Watch {
    /// A watch on `names` in `graveyard`; nothing is armed until
    /// [`Watch::arm`]. Without names it is quiet from the start (an inotify
    /// instance costs milliseconds to close at exit).
    pub fn open(graveyard: &Graveyard, names: &[Name]) -> Watch {
        let dir = graveyard.dir().to_path_buf();
        let mode = if names.is_empty() {
            Mode::Quiet { _fd: None }
        } else {
            match Events::open(&dir, names.len()) {
                Ok(events) => Mode::Events(Box::new(events)),
                Err(err) => {
                    warn_polling(&dir, &err);
                    Mode::Polling {
                        next: Instant::now() + POLL_EVERY,
                    }
                }
            }
        };
        Watch {
            stones: names.iter().map(|n| graveyard.path_of(n)).collect(),
            locks: names.iter().map(|n| graveyard.lock_path(n).ok()).collect(),
            names: names.to_vec(),
            dir,
            mode,
            gone: false,
        }
    }

    /// Makes sure that any change to `name`'s tombstone or lock from now on
    /// is reported. Call it before reading the tombstone. Whether the lock
    /// is watched afresh (first armed, or a new file): a close just before
    /// was not seen.
    pub fn arm(&mut self, name: &Name) -> bool {
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return false;
        };
        let Mode::Events(events) = &mut self.mode else {
            return false;
        };
        let armed = events
            .arm_lock(i, self.locks[i].as_ref())
            .and_then(|fresh| {
                let stone = events.arm_stone(i, &self.stones[i], &self.dir)?;
                Ok((fresh, stone))
            });
        match armed {
            Ok((fresh, Armed::Done)) => fresh,
            Ok((fresh, Armed::DirectoryGone)) => {
                self.gone = true;
                fresh
            }
            Err(err) => {
                self.fall_back(&err);
                false
            }
        }
    }

    /// Waits for the next batch of changes, de-duplicated.
    pub async fn next(&mut self) -> Vec<Change> {
        if std::mem::take(&mut self.gone) {
            return vec![Change::Gone];
        }
        match &mut self.mode {
            Mode::Quiet { .. } => std::future::pending().await,
            Mode::Polling { next } => {
                tokio::time::sleep_until(*next).await;
                *next = Instant::now() + POLL_EVERY;
                vec![if self.dir.is_dir() {
                    Change::Everything
                } else {
                    Change::Gone
                }]
            }
            Mode::Events(events) => match events.next(&self.names).await {
                Ok(changes) => changes,
                Err(err) => self.unreadable(&err),
            },
        }
    }

    /// The descriptor that becomes readable when [`Watch::now`] has
    /// something to say: only while events come from inotify, and nothing
    /// is owed already.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.mode {
            Mode::Events(events) if !self.gone => Some(events.fd.get_ref().as_fd()),
            _ => None,
        }
    }

    /// The changes queued now, without waiting; `None` when nothing queued
    /// concerns a name. Its caller waits for [`Watch::fd`] itself.
    pub fn now(&mut self) -> Option<Vec<Change>> {
        if std::mem::take(&mut self.gone) {
            return Some(vec![Change::Gone]);
        }
        let Mode::Events(events) = &mut self.mode else {
            return None;
        };
        match events.now(&self.names) {
            Ok(changes) => (!changes.is_empty()).then_some(changes),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => None,
            Err(err) => Some(self.unreadable(&err)),
        }
    }

    /// After the graveyard was created again: the parent is watched anew;
    /// the caller then arms every name again.
    pub fn rewatch(&mut self) {
        self.gone = false;
        if let Mode::Events(events) = &mut self.mode {
            // The old directory's watch watches nothing that matters now.
            if let Some(old) = events.marks.dir.take() {
                let _ = events.fd.get_mut().watches().remove(old);
            }
            events.watch_parent(&self.dir);
        }
    }

    /// Stops listening for good, cheaply: the kernel stops queueing events
    /// that nobody will read.
    pub fn quiet(&mut self) {
        self.gone = false;
        let mode = std::mem::replace(&mut self.mode, Mode::Quiet { _fd: None });
        self.mode = match mode {
            Mode::Events(mut events) => {
                let mut watches = events.fd.get_mut().watches();
                let all = events
                    .marks
                    .targets
                    .drain(..)
                    .map(|(wd, _)| wd)
                    .chain(events.marks.dir.take());
                for wd in all.chain(events.marks.parent.take().map(|(wd, _)| wd)) {
                    let _ = watches.remove(wd);
                }
                Mode::Quiet {
                    _fd: Some(events.fd),
                }
            }
            other => other,
        };
    }

    /// Reading the events failed: from now on the graveyard is polled,
    /// and anything may have changed meanwhile.
    fn unreadable(&mut self, err: &io::Error) -> Vec<Change> {
        tracing::warn!("cannot read graveyard events: {err}");
        self.fall_back(err);
        vec![Change::Everything]
    }

    fn fall_back(&mut self, err: &io::Error) {
        if let Mode::Events(_) = self.mode {
            warn_polling(&self.dir, err);
            self.mode = Mode::Polling {
                next: Instant::now() + POLL_EVERY,
            };
        }
    }
}

fn warn_polling(dir: &std::path::Path, err: &io::Error) {
    let hint = if is_limit(err) {
        ": raise the sysctls fs.inotify.max_user_instances and fs.inotify.max_user_watches \
         for immediate reactions"
    } else {
        ""
    };
    tracing::warn!(
        "cannot watch the graveyard {} with inotify ({err}); reading it every {} instead{hint}",
        dir.display(),
        GoDuration(POLL_EVERY)
    );
}

/// Whether an inotify error is one of the kernel's per-user limits.
fn is_limit(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOSPC | libc::ENOMEM)
    )
}

enum Armed {
    Done,
    DirectoryGone,
}

impl Events {
    fn open(dir: &std::path::Path, count: usize) -> io::Result<Events> {
        let inotify = Inotify::init()?;
        // SAFETY: the Inotify value owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(inotify) }.map_err(io::Error::from)?;
        let mut events = Events {
            fd,
            buffer: vec![0; 16 * 1024],
            marks: Marks {
                dir: None,
                parent: None,
                targets: Vec::new(),
                stones: vec![None; count],
                locks: vec![None; count],
                missing: vec![false; count],
            },
        };
        events.watch_parent(dir);
        Ok(events)
    }

    /// Watches the graveyard's parent for the graveyard's own removal. The
    /// parent may be unreadable, which only loses that.
    fn watch_parent(&mut self, dir: &std::path::Path) {
        let mut watches = self.fd.get_mut().watches();
        if let Some((wd, _)) = self.marks.parent.take() {
            let _ = watches.remove(wd);
        }
        let Ok(absolute) = fs::canonicalize(dir) else {
            return;
        };
        if let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) {
            let mask = WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::ONLYDIR;
            if let Ok(wd) = watches.add(parent, mask) {
                self.marks.parent = Some((wd, name.to_os_string()));
            }
        }
    }

    /// Watches the lock file, if there is one: a kubexit creates it before
    /// it writes `Born`, and Go peers hold none. Whether the watch is new.
    fn arm_lock(&mut self, i: usize, path: Option<&PathBuf>) -> io::Result<bool> {
        let wd = match path {
            None => None,
            Some(path) => match self.fd.get_mut().watches().add(path, LOCK_MASK) {
                Ok(wd) => Some(wd),
                Err(err) if not_watchable(&err) => None,
                Err(err) => return Err(err),
            },
        };
        let fresh = wd.is_some() && self.marks.locks[i] != wd;
        self.retarget(Target::Lock(i), wd);
        Ok(fresh)
    }

    fn arm_stone(&mut self, i: usize, path: &PathBuf, dir: &std::path::Path) -> io::Result<Armed> {
        let mut wd = match self.fd.get_mut().watches().add(path, STONE_MASK) {
            Ok(wd) => Some(wd),
            Err(err) if not_watchable(&err) => None,
            Err(err) => return Err(err),
        };
        if wd.is_none() {
            // The directory first, then look again: a tombstone created in
            // between is seen by one or the other.
            if self.marks.dir.is_none() {
                match self.fd.get_mut().watches().add(dir, DIR_MASK) {
                    Ok(dir_wd) => self.marks.dir = Some(dir_wd),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Ok(Armed::DirectoryGone);
                    }
                    Err(err) => return Err(err),
                }
            }
            wd = match self.fd.get_mut().watches().add(path, STONE_MASK) {
                Ok(wd) => Some(wd),
                Err(err) if not_watchable(&err) => None,
                Err(err) => return Err(err),
            };
        }
        self.marks.missing[i] = wd.is_none();
        self.retarget(Target::Stone(i), wd);
        if !self.marks.missing.contains(&true)
            && let Some(dir_wd) = self.marks.dir.take()
        {
            let _ = self.fd.get_mut().watches().remove(dir_wd);
        }
        Ok(Armed::Done)
    }

    /// Points `target` at the watch `wd`, dropping the watch it had if
    /// nothing else uses it (the file it watched was replaced).
    fn retarget(&mut self, target: Target, wd: Option<WatchDescriptor>) {
        let slot = match target {
            Target::Stone(i) => &mut self.marks.stones[i],
            Target::Lock(i) => &mut self.marks.locks[i],
        };
        let old = std::mem::replace(slot, wd.clone());
        if old == wd {
            return;
        }
        if let Some(old) = old
            && let Some(at) = self.marks.target_of(&old)
        {
            let list = &mut self.marks.targets[at].1;
            list.retain(|t| *t != target);
            if list.is_empty() {
                self.marks.targets.swap_remove(at);
                let _ = self.fd.get_mut().watches().remove(old);
            }
        }
        if let Some(wd) = wd {
            match self.marks.target_of(&wd) {
                Some(at) if self.marks.targets[at].1.contains(&target) => {}
                Some(at) => self.marks.targets[at].1.push(target),
                None => self.marks.targets.push((wd, vec![target])),
            }
        }
    }

    async fn next(&mut self, names: &[Name]) -> io::Result<Vec<Change>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let changes = match guard.get_inner_mut().read_events(&mut self.buffer) {
                Ok(events) => self.marks.decode(events, names),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    continue;
                }
                Err(err) => return Err(err),
            };
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }

    /// What is queued now, without waiting: `WouldBlock` when nothing is,
    /// and no changes when what was queued concerns no name.
    fn now(&mut self, names: &[Name]) -> io::Result<Vec<Change>> {
        let events = self.fd.get_mut().read_events(&mut self.buffer)?;
        Ok(self.marks.decode(events, names))
    }
}

impl Marks {
    /// Where `wd`'s entry is in `targets`.
    fn target_of(&self, wd: &WatchDescriptor) -> Option<usize> {
        self.targets.iter().position(|(known, _)| same(known, wd))
    }

    /// The changes that a batch of events means, de-duplicated; the
    /// watches the kernel dropped are forgotten.
    fn decode(&mut self, events: inotify::Events<'_>, names: &[Name]) -> Vec<Change> {
        let mut changes: Vec<Change> = Vec::new();
        let mut ignored = Vec::new();
        for event in events {
            let mut push = |change: Change| {
                if !changes.contains(&change) {
                    changes.push(change);
                }
            };
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                push(Change::Everything);
            } else if let Some((wd, own)) = &self.parent
                && same(wd, &event.wd)
            {
                if event.name == Some(own.as_os_str()) {
                    push(Change::Gone);
                }
            } else if self.dir.as_ref().is_some_and(|dir| same(dir, &event.wd)) {
                if event
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                {
                    push(Change::Gone);
                } else if event.mask.contains(EventMask::IGNORED) {
                    ignored.push(event.wd.clone());
                } else if let Some(entry) = event.name {
                    // A dependency's tombstone, or its lock, appeared.
                    let entry = entry.to_string_lossy();
                    let lock = entry
                        .strip_prefix('.')
                        .and_then(|rest| rest.strip_suffix(".lock"));
                    if let Some(name) = names
                        .iter()
                        .find(|n| n.as_str() == entry || Some(n.as_str()) == lock)
                    {
                        push(Change::Stone(name.clone()));
                    }
                }
            } else if let Some(at) = self.target_of(&event.wd) {
                for target in &self.targets[at].1 {
                    match *target {
                        Target::Stone(i) => push(Change::Stone(names[i].clone())),
                        Target::Lock(i) if event.mask.contains(EventMask::CLOSE_WRITE) => {
                            push(Change::Lock(names[i].clone()));
                        }
                        Target::Lock(_) => {}
                    }
                }
                if event.mask.contains(EventMask::IGNORED) {
                    ignored.push(event.wd.clone());
                }
            }
        }
        // The kernel dropped these watches (their file is gone): forget
        // them, so that a reused descriptor never means a stale name.
        for wd in ignored {
            if self.dir.as_ref().is_some_and(|dir| same(dir, &wd)) {
                self.dir = None;
            }
            if let Some(at) = self.target_of(&wd) {
                for target in self.targets.swap_remove(at).1 {
                    match target {
                        Target::Stone(i) => self.stones[i] = None,
                        Target::Lock(i) => self.locks[i] = None,
                    }
                }
            }
        }
        changes
    }
}

/// Whether two descriptors of this one instance are the same watch: by
/// number (the crate's own comparison also asks, through a weak pointer,
/// whether the instance is the same, which here it always is).
fn same(a: &WatchDescriptor, b: &WatchDescriptor) -> bool {
    a.get_watch_descriptor_id() == b.get_watch_descriptor_id()
}

/// Errors that mean "this file cannot be watched (now)", not "inotify is
/// failing": it does not exist, or kubexit may not read it.
fn not_watchable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOENT | libc::EACCES | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG)
    )
}
