//! Paths as the report shows them: relative to the checkout, to
//! `../shared` or to `$CARGO_TARGET_DIR` where they lie under one, so that
//! a report pasted into BENCHMARKS.md names no directory of the machine it
//! was measured on.

use std::path::{Path, PathBuf};

/// `path` as the report shows it.
pub fn shown(path: &Path) -> String {
    let absolute = absolute(path);
    let checkout = absolute_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut bases: Vec<(PathBuf, String)> = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEXIT_SHARED") {
        bases.push((absolute_dir(Path::new(&dir)), "$KUBEXIT_SHARED".to_owned()));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        bases.push((
            absolute_dir(Path::new(&dir)),
            "$CARGO_TARGET_DIR".to_owned(),
        ));
    }
    bases.push((
        absolute_dir(&checkout.join("../shared")),
        "../shared".to_owned(),
    ));
    bases.push((checkout, String::new()));
    for (base, name) in bases {
        if let Ok(rest) = absolute.strip_prefix(&base) {
            return match (name.is_empty(), rest.as_os_str().is_empty()) {
                (true, _) => rest.display().to_string(),
                (false, true) => name,
                (false, false) => format!("{name}/{}", rest.display()),
            };
        }
    }
    path.display().to_string()
}

/// A word of a command line: a path as [`shown`] if it names an existing
/// file or directory, else unchanged.
pub fn shown_word(word: &str) -> String {
    let path = Path::new(word);
    if path.exists() && (path.is_absolute() || word.contains('/')) {
        shown(path)
    } else {
        word.to_owned()
    }
}

fn absolute(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            absolute_dir(parent).join(name)
        }
        _ => absolute_dir(path),
    }
}

fn absolute_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}
