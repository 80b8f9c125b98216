//! Programs the harness starts: where they are (PATH, the executable
//! bit), and the environment they start with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Removes the harness's own `KUBEXIT_*` variables from a command's
/// environment.
pub fn without_kubexit_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"KUBEXIT_") {
            command.env_remove(key);
        }
    }
}

/// Finds a program on PATH, as a shell would.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
