//! One entry of the graveyard, opened and read as a directory shared with
//! strangers requires: never following a link, never blocking, a regular
//! file only, and a bounded read (the graveyard's first promise).
//!
//! Every entry kubexit opens, a tombstone or a liveness lock, is opened
//! here with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`: a symbolic link is
//! refused ([`ReadError::Symlink`]), a FIFO cannot hold kubexit in `open`,
//! and a terminal is never acquired. What stands at the name is told by
//! [`ReadError::NotAFile`]; at most [`MAX_TOMBSTONE_BYTES`] are read. The
//! graveyard's reads, its rewrite in place and the liveness locks open
//! their entries through these functions; the one other open is the
//! graveyard's own of a new temporary file (`O_EXCL | O_NOFOLLOW`), which
//! nothing stands at yet.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::libc;

use crate::files;
use crate::graveyard::tombstone::ParseError;

/// Tombstones are a few hundred bytes; anything beyond this is not one.
pub const MAX_TOMBSTONE_BYTES: u64 = 64 * 1024;

/// Why one entry of the graveyard could not be read.
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

/// Opens the graveyard entry at `path` for `access` (and, when created,
/// with `mode`), never following a link, never blocking, never acquiring a
/// terminal, and only if it is a regular file. `Ok(None)`: nothing is there.
pub fn open_entry(
    path: &Path,
    access: libc::c_int,
    mode: libc::mode_t,
) -> Result<Option<File>, ReadError> {
    let Some(file) = open_any(path, access, mode)? else {
        return Ok(None);
    };
    refuse_unless_regular(&file)?;
    Ok(Some(file))
}

/// [`open_entry`] without the look at what was opened: the caller asks
/// [`refuse_unless_regular`] before it trusts anything it read.
pub fn open_any(
    path: &Path,
    access: libc::c_int,
    mode: libc::mode_t,
) -> Result<Option<File>, ReadError> {
    let flags = access | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    match files::open(path, flags, mode) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => Err(ReadError::Symlink),
        Err(err) if err.raw_os_error() == Some(libc::EISDIR) => {
            Err(ReadError::NotAFile("directory"))
        }
        // A FIFO opened for writing with no reader.
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
            Err(ReadError::NotAFile("named pipe or device"))
        }
        Err(err) => Err(ReadError::Io(err)),
    }
}

/// `Ok` when `file` is a regular file; otherwise the error that says what
/// it is.
pub fn refuse_unless_regular(file: &File) -> Result<(), ReadError> {
    let kind = file.metadata().map_err(ReadError::Io)?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(ReadError::NotAFile(if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "named pipe"
    } else if kind.is_socket() {
        "socket"
    } else {
        "device"
    }))
}

/// How much of a tombstone the first read asks for: more than any
/// tombstone kubexit or Go writes, so that one read is its end.
const TOMBSTONE_HINT: usize = 512;

/// Reads at most `limit` bytes of an entry, from its start, positionally
/// (a FIFO, a socket or a directory refuses), one read for a tombstone.
pub fn read_bounded(file: &File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX - 1);
    let bytes = files::read_small(file, TOMBSTONE_HINT, limit).map_err(ReadError::Io)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}
