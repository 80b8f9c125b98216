//! Small files in few system calls.
//!
//! kubexit's reaction to a death is a handful of small reads: the
//! dependency's tombstone, then, to stop the child, a few files of `/proc`.
//! On the machines it runs on a system call costs microseconds, so the
//! number of them is the reaction's cost. The standard library pays more
//! than the kernel asks for: opening through musl's `open` adds an `fcntl`
//! that sets close-on-exec a second time, and reading to the end asks once
//! more after a short read, to see the end of the file. This module opens
//! with one `openat` and reads a small file with one `pread` when it fits:
//! a short read of a regular file, or of a `/proc` file the kernel fills in
//! one go (`stat`, `children`, sysctls), is its end. A file that fills the
//! buffer is read on, in larger steps, up to a limit the caller sets.
//! Reads are positional, from the start of the file, so that what cannot
//! be read at an offset (a FIFO, a socket, a terminal) fails at once
//! (`ESPIPE`) instead of handing over a stream.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::libc;

/// Opens `path` with `flags` (close-on-exec is added) and, for a file it
/// creates, `mode`: one `openat` system call.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    loop {
        // SAFETY: `path` is a NUL-terminated string that outlives the call;
        // openat reads nothing else of ours.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: the descriptor was just opened and is owned by no one
            // else.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads `file` from its start to its end, expecting about `hint` bytes:
/// one `pread` when the file is no larger. Stops with what it has once
/// more than `limit` bytes have been read (the caller sees the length, and
/// refuses).
pub fn read_small(file: &File, hint: usize, limit: usize) -> io::Result<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(hint.min(limit) + 1);
    loop {
        if bytes.len() == bytes.capacity() {
            // Full, and not past the limit (checked below): grow, but not
            // beyond one byte past it.
            bytes.reserve_exact(bytes.len().max(64).min(limit + 1 - bytes.len()));
        }
        let start = bytes.len();
        let room = bytes.capacity() - start;
        bytes.resize(start + room, 0);
        let read = file.read_at(&mut bytes[start..], start as u64);
        bytes.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            // A short read is the end; so is a file past the limit.
            Ok(read) if read < room || bytes.len() > limit => return Ok(bytes),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// The text of a small file of `/proc` (at most 64 KiB), read in one call
/// when it is under `hint` bytes.
pub fn read_proc(path: &Path, hint: usize) -> io::Result<String> {
    let file = open(path, libc::O_RDONLY, 0)?;
    let bytes = read_small(&file, hint, 64 * 1024)?;
    String::from_utf8(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_is_read_whole_whatever_the_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&text).unwrap();
        for hint in [0, 1, 63, 64, 9_999, 10_000, 10_001, 50_000] {
            let file = open(&path, libc::O_RDONLY, 0).unwrap();
            assert_eq!(read_small(&file, hint, 1 << 20).unwrap(), text, "{hint}");
        }
    }

    #[test]
    fn reading_stops_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path)
            .unwrap()
            .write_all(&[b'x'; 5000])
            .unwrap();
        for hint in [0, 100, 4096, 5000] {
            let file = open(&path, libc::O_RDONLY, 0).unwrap();
            let bytes = read_small(&file, hint, 4096).unwrap();
            assert!(bytes.len() > 4096, "{hint}: {}", bytes.len());
            let file = open(&path, libc::O_RDONLY, 0).unwrap();
            assert_eq!(read_small(&file, hint, 5000).unwrap().len(), 5000);
        }
    }

    #[test]
    fn opened_descriptors_close_on_exec_and_errors_are_the_kernels() {
        let file = open(Path::new("/proc/self/stat"), libc::O_RDONLY, 0).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: fcntl with F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let missing = open(Path::new("/nonexistent/kubexit"), libc::O_RDONLY, 0);
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(
            read_proc(Path::new("/proc/self/stat"), 512)
                .unwrap()
                .contains(')')
        );
    }
}
