//! Self-install: `kubexit --install DIR`.
//!
//! The usual way into a pod is an init container that copies the binary
//! into a shared `emptyDir` (`cp /bin/kubexit /kubexit/kubexit`). An image
//! built `FROM scratch` has no `cp`, so kubexit copies itself: the running
//! executable (read through /proc/self/exe, so it works whatever the path it
//! was started by) goes to a temporary file in DIR, made executable, then
//! renamed to DIR/kubexit, so a container starting from the same volume
//! never runs half a binary.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::random;

/// Why the copy failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot install kubexit into {dir:?}: {source}; check that the directory is a writable volume"
)]
pub struct InstallError {
    dir: PathBuf,
    source: io::Error,
}

/// Copies the running kubexit to `dir/kubexit`; returns that path.
pub fn install(dir: &Path) -> Result<PathBuf, InstallError> {
    let fail = |source| InstallError {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let target = dir.join("kubexit");
    // Random, not the pid: every init container is PID 1 of its own.
    let temporary = dir.join(format!(".kubexit-install-{:016x}", random::u64()));
    let copy = || -> io::Result<()> {
        let mut source = File::open("/proc/self/exe")?;
        let mut copy = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        io::copy(&mut source, &mut copy)?;
        copy.sync_all()?;
        fs::rename(&temporary, &target)
    };
    copy().map_err(|err| {
        // Only a file this kubexit made: create_new refused anything else.
        if err.kind() != io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(&temporary);
        }
        fail(err)
    })?;
    Ok(target)
}
