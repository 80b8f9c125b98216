//! The graveyard: the shared directory where tombstones live.
//!
//! Every container of a pod can write here, each kubexit PID 1 of its own
//! PID namespace, so the graveyard treats the directory as shared with
//! strangers, and nothing it does depends on a pid being unique:
//!
//! * **Opening never follows a link nor waits for a writer.** Every entry
//!   kubexit opens (a tombstone, a liveness lock) is opened with
//!   `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`: a symbolic link is refused, not
//!   followed out of the directory; a FIFO cannot hold kubexit in `open`. A
//!   lock must be a regular file. A tombstone is read from its start with
//!   positional reads, which a FIFO, a socket, a terminal and a directory
//!   refuse; when what was read is refused, the error names what stands
//!   there (a device's bytes are no tombstone). Of an entry at most
//!   [`MAX_TOMBSTONE_BYTES`] and one byte more are read (the byte that
//!   shows it is too large), and nothing of a larger one is parsed. Names
//!   are [`Name`]s, which cannot contain `/` or start with `.`, so no path
//!   leaves the directory. These calls are made on the caller's thread, the
//!   event loop's: on a graveyard whose filesystem stops answering (a hung
//!   NFS or FUSE mount) they wait with it, as any file system call does.
//!   The graveyard `kubexit inject` makes is an `emptyDir` in memory.
//! * **Writes are atomic and cannot collide.** A tombstone is written to a
//!   fresh dot-file with a random name, created with `O_EXCL | O_NOFOLLOW`
//!   (a name already taken, by a sibling's write in progress or by anything
//!   planted there, is simply passed over for another random one), then
//!   renamed over the old record: readers see the old record or the new
//!   one, never half of one, and Go peers see the rename as a create event.
//! * **What kubexit removes is its own.** The rename removes the record it
//!   replaces at the writer's own name. A temporary file whose write failed
//!   is unlinked only if its name still refers to the file kubexit created
//!   when kubexit looks; Linux has no unlink that checks what it removes,
//!   so a file renamed onto that name between the look and the unlink is
//!   removed in its place (the test
//!   `a_file_renamed_onto_a_temporary_name_between_look_and_unlink_is_removed`
//!   makes that rename). Only a process that may rename entries of the
//!   graveyard can put it there, and such a process may remove them as
//!   well (in a sticky directory, only the temporary file's owner, the
//!   directory's or root may replace it), so the race lets nobody do what
//!   they could not do themselves. No dependent sees it: they read
//!   tombstones at [`Name`]s and locks at `.NAME.lock`, never at a
//!   temporary name (`.kubexit-*.tmp`).
//! * **A full filesystem still records a death.** When no new file can be
//!   made (`ENOSPC`, `EDQUOT`), the existing tombstone is rewritten in place,
//!   as Go kubexit writes: cut to its first byte, whose block stays
//!   allocated, then written, so a record of a few hundred bytes still
//!   fits. Readers may then see a torn record for a moment: that byte, or a
//!   part of the new record. Either is unreadable or says less than the new
//!   record, never a death it does not hold (the old record's `Died` under
//!   a new `Born` was seen before the first cut:
//!   `a_rewrite_in_place_never_shows_the_new_birth_with_the_old_death`),
//!   and readers read it again on the next event. The log says the
//!   filesystem is full.
//!
//! How the directory is watched is the [`watch`] module's business; what a
//! tombstone means is [`tombstone`]'s, and whether a death is for good,
//! where the kubelet restarts containers in place, [`restart`]'s; the
//! liveness locks are [`liveness`]'s.

pub(crate) mod entry;
pub(crate) mod liveness;
pub mod name;
pub mod restart;
pub mod tombstone;
pub(crate) mod watch;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use nix::libc;

use crate::files;
use crate::graveyard::entry::{
    MAX_TOMBSTONE_BYTES, ReadError, open_any, open_entry, read_bounded, refuse_unless_regular,
};
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::Tombstone;
use crate::random;

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
        Some(libc::ENOSPC) => "; the graveyard's filesystem is full",
        Some(libc::EDQUOT) => "; the graveyard's disk quota is exhausted",
        Some(libc::EROFS) => "; the graveyard is mounted read-only",
        Some(libc::EACCES | libc::EPERM) => {
            "; kubexit needs write permission on the graveyard directory"
        }
        Some(libc::ENOENT) => "; the graveyard directory was removed",
        Some(libc::EISDIR) => {
            "; a directory stands where the tombstone belongs: remove it, or give this process another name"
        }
        _ => "",
    }
}

/// Whether a write failed because no new file or block could be had.
fn is_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
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
        Ok(Graveyard::at(dir))
    }

    /// The graveyard at `dir`, as it is: nothing is created (for readers
    /// such as the status view, which never change the graveyard).
    pub fn at(dir: &Path) -> Graveyard {
        Graveyard {
            dir: dir.to_path_buf(),
            zone: tombstone::local_zone(),
        }
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
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        Ok(self.dir.join(file))
    }

    /// The names of the tombstones in the graveyard (dot-files and names
    /// that are not valid left out), sorted.
    pub fn names(&self) -> io::Result<Vec<Name>> {
        let mut names: Vec<Name> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| Name::from_os(&entry.file_name()).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads `name`'s tombstone: `Ok(None)` if there is none yet.
    ///
    /// This is the read a death is seen by, so it makes no system call it
    /// can spare: an `openat` and, for a tombstone of usual size, one
    /// `pread`. What stands at the name is asked (`fstat`) only when what
    /// was read is refused or empty: a positional read is itself refused by
    /// a FIFO, a socket, a terminal and a directory, and the bytes of the
    /// devices a container may open (null, zero, random) are no tombstone.
    pub fn read(&self, name: &Name) -> Result<Option<Tombstone>, ReadError> {
        let Some(file) = open_any(&self.path_of(name), libc::O_RDONLY, 0)? else {
            return Ok(None);
        };
        let parsed = read_bounded(&file, MAX_TOMBSTONE_BYTES)
            .and_then(|bytes| Ok((Tombstone::parse(&bytes)?, bytes.is_empty())));
        // What stands at the name is asked at most once: when nothing was
        // read (a device may read as nothing), or what was read is refused.
        match parsed {
            Ok((stone, false)) => Ok(Some(stone)),
            Ok((stone, true)) => refuse_unless_regular(&file).map(|()| Some(stone)),
            Err(err) => Err(refuse_unless_regular(&file).err().unwrap_or(err)),
        }
    }

    /// Replaces `name`'s tombstone with `stone`: atomically when a new file
    /// can be made, in place when the filesystem is full.
    ///
    /// A graveyard removed since it was opened is created again first, so
    /// that a kubexit without dependencies (which does not watch the
    /// graveyard) still leaves its record.
    pub fn write(&self, name: &Name, stone: &Tombstone) -> Result<(), WriteError> {
        let path = self.path_of(name);
        let text = stone.render(&self.zone);
        let mut result = self.replace(&path, text.as_bytes());
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) && !self.dir.exists() {
            tracing::warn!(
                "the graveyard {} was removed; creating it again",
                self.dir.display()
            );
            if self.recreate().is_ok() {
                result = self.replace(&path, text.as_bytes());
            }
        }
        if let Err(err) = &result
            && is_full(err)
            && rewrite_in_place(&path, text.as_bytes()).is_ok()
        {
            tracing::warn!(
                "the graveyard's filesystem is full ({err}): {} was rewritten in place instead; \
                 free space on the volume",
                path.display()
            );
            return Ok(());
        }
        result.map_err(|source| WriteError { path, source })
    }

    /// Writes `bytes` to a new temporary file and renames it to `path`.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // A name is taken only by chance or by a hostile neighbour; a few
        // fresh draws get past either.
        for _ in 0..16 {
            let temp = self.dir.join(temporary_name());
            let file = match create_exclusive(&temp) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            };
            let written = (&file)
                .write_all(bytes)
                .and_then(|()| fs::rename(&temp, path));
            if written.is_err() {
                remove_own(&temp, &file);
            }
            return written;
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every temporary name kubexit drew was taken",
        ))
    }
}

/// Rewrites the existing regular file at `path` in place: first cut to
/// its first byte, then the bytes at offset 0, then the length cut to
/// theirs. No new file, and for a tombstone no new block, is needed: the
/// block that holds the first byte stays.
///
/// The first cut is what keeps a reader from seeing the new record's start
/// with the old one's end (a new `Born` with the `Died` of an earlier
/// life): while the bytes go in, what is there is at most one old byte and
/// the new bytes.
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = match open_entry(path, libc::O_WRONLY, 0) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        Err(err) => return Err(io::Error::other(err.to_string())),
    };
    if file.metadata()?.len() > 1 {
        file.set_len(1)?;
    }
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

/// A dot-name drawn at random: dot-files are reserved for kubexit (no
/// [`Name`] starts with a dot), and nothing about it is unique only within
/// one process tree, as a pid would be in a pod of PID namespaces.
fn temporary_name() -> String {
    format!(".kubexit-{:016x}.tmp", random::u64())
}

/// Creates a new file at `path`; fails if anything, even a dangling link,
/// is there already.
fn create_exclusive(path: &Path) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    files::open(path, flags, 0o644)
}

/// Removes the temporary file at `path` if it is still `file`, the one
/// kubexit created; `true` when it unlinked the name. A file that stands
/// at that name when kubexit looks is left.
///
/// Linux has no unlink that checks what it removes, so the look and the
/// unlink are two steps: a file renamed onto the name between them is
/// removed in place of kubexit's (the module essay says why that gives
/// nobody anything).
fn remove_own(path: &Path, file: &File) -> bool {
    remove_own_looked(path, file, || ())
}

/// [`remove_own`], with `between` run after the look and before the
/// unlink, where the race is, for the test that shows it.
fn remove_own_looked(path: &Path, file: &File, between: impl FnOnce()) -> bool {
    let (Ok(ours), Ok(there)) = (file.metadata(), fs::symlink_metadata(path)) else {
        return false;
    };
    if ours.dev() != there.dev() || ours.ino() != there.ino() {
        return false;
    }
    between();
    fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stone() -> Tombstone {
        Tombstone {
            born: Some(jiff::Timestamp::now()),
            ..Tombstone::default()
        }
    }

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(&dir.path().join("nested/yard")).unwrap();
        let name = Name::new("app").unwrap();
        assert!(graveyard.read(&name).unwrap().is_none());
        let stone = stone();
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

    #[test]
    fn a_fifo_fed_a_death_and_devices_are_refused_for_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        let read = |n: &str| graveyard.read(&Name::new(n).unwrap());
        // A writer holds the FIFO open with a whole tombstone in it: the
        // positional read refuses the stream, and nothing of it is taken.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let _reader = files::open(&fifo, libc::O_RDONLY | libc::O_NONBLOCK, 0).unwrap();
        let mut writer = files::open(&fifo, libc::O_WRONLY | libc::O_NONBLOCK, 0).unwrap();
        writer
            .write_all(b"Born: \"2026-01-01T00:00:00Z\"\nDied: \"2026-01-01T00:00:01Z\"\n")
            .unwrap();
        assert!(
            matches!(read("fifo"), Err(ReadError::NotAFile("named pipe"))),
            "{:?}",
            read("fifo")
        );
        // Devices (root only, as mknod needs): one reads nothing, the other
        // zeros without end.
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let mode = Mode::from_bits_truncate(0o644);
        let null = mknod(
            &dir.path().join("null"),
            SFlag::S_IFCHR,
            mode,
            makedev(1, 3),
        );
        let zero = mknod(
            &dir.path().join("zero"),
            SFlag::S_IFCHR,
            mode,
            makedev(1, 5),
        );
        if null.is_err() || zero.is_err() {
            eprintln!("skipping the device cases: mknod needs CAP_MKNOD");
            return;
        }
        for device in ["null", "zero"] {
            assert!(
                matches!(read(device), Err(ReadError::NotAFile("device"))),
                "{device}: {:?}",
                read(device)
            );
        }
    }

    #[test]
    fn temporary_names_differ_and_stay_short() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| temporary_name()).collect();
        assert_eq!(names.len(), 1000);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(".kubexit-") && n.len() == 29)
        );
    }

    #[test]
    fn a_file_at_a_temporary_name_is_never_removed_by_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        let planted = dir.path().join(".kubexit-planted.tmp");
        fs::write(&planted, "someone else's").unwrap();
        let file = File::open(&planted).unwrap();
        // Not ours: a different inode now stands at a name we created.
        let other = dir.path().join(".kubexit-ours.tmp");
        let ours = create_exclusive(&other).unwrap();
        fs::rename(&planted, &other).unwrap();
        assert!(!remove_own(&other, &ours));
        assert_eq!(fs::read_to_string(&other).unwrap(), "someone else's");
        drop(file);
        graveyard
            .write(&Name::new("app").unwrap(), &stone())
            .unwrap();
        assert!(other.exists());
    }

    #[test]
    fn a_temporary_file_of_kubexits_own_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".kubexit-ours.tmp");
        let ours = create_exclusive(&path).unwrap();
        assert!(remove_own(&path, &ours));
        assert!(!path.exists());
    }

    /// The exception the module essay names: a file renamed onto the
    /// temporary name after kubexit looked and before it unlinks is
    /// removed in place of kubexit's.
    #[test]
    fn a_file_renamed_onto_a_temporary_name_between_look_and_unlink_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".kubexit-ours.tmp");
        let ours = create_exclusive(&path).unwrap();
        let planted = dir.path().join(".planted");
        fs::write(&planted, "someone else's").unwrap();
        let rename_onto_it = || fs::rename(&planted, &path).unwrap();
        assert!(remove_own_looked(&path, &ours, rename_onto_it));
        assert!(
            !path.exists() && !planted.exists(),
            "the planted file is gone"
        );
    }

    /// On a full filesystem a restarted process's `Born` is written over
    /// its earlier life's record, `Died` included. A reader in the middle
    /// of that rewrite may see a torn record, but never the new `Born`
    /// with the old `Died`: a death that the new record does not hold.
    #[test]
    fn a_rewrite_in_place_never_shows_the_new_birth_with_the_old_death() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        let name = Name::new("app").unwrap();
        let path = graveyard.path_of(&name);
        let earlier =
            "Born: \"2026-01-01T00:00:00Z\"\nDied: \"2026-01-01T00:00:01Z\"\nExitCode: 0\n";
        let reborn = jiff::Timestamp::from_second(1_767_225_602).unwrap();
        let again = format!("Born: \"{reborn}\"\n");
        assert_eq!(
            again.find('\n'),
            earlier.find('\n'),
            "the first lines line up"
        );
        let done = AtomicBool::new(false);
        let torn = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut torn = 0;
                while !done.load(Ordering::Relaxed) {
                    if let Ok(Some(stone)) = graveyard.read(&name)
                        && stone.born == Some(reborn)
                        && stone.is_dead()
                    {
                        torn += 1;
                    }
                }
                torn
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
            while std::time::Instant::now() < deadline {
                fs::write(&path, earlier).unwrap();
                rewrite_in_place(&path, again.as_bytes()).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert_eq!(torn, 0, "reads that saw the new Born with the old Died");
    }

    #[test]
    fn an_existing_tombstone_is_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        fs::write(
            &path,
            "Born: \"2026-01-01T00:00:00Z\"\nReady: \"2026-01-01T00:00:00Z\"\n",
        )
        .unwrap();
        rewrite_in_place(&path, b"Died: x\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "Died: x\n");
        assert!(rewrite_in_place(&dir.path().join("missing"), b"x").is_err());
    }
}
