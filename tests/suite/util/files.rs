//! The repository's own files, as tests find them: the checkout, the build
//! directory, and the fixtures.

#[cfg(feature = "inject")]
use std::fs;
use std::path::{Path, PathBuf};

/// The checkout.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's build directory: `CARGO_TARGET_DIR` (relative to the checkout
/// if it is relative), else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"))
}

/// `tests/fixtures/TOPIC`.
pub fn fixtures(topic: &str) -> PathBuf {
    root().join("tests/fixtures").join(topic)
}

/// The plain manifests of a fixtures folder (`*.yaml`, less the golden
/// outputs `*.injected.yaml`), sorted.
#[cfg(feature = "inject")]
pub fn golden_inputs(topic: &str) -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = fs::read_dir(fixtures(topic))
        .unwrap_or_else(|e| panic!("tests/fixtures/{topic}: {e}"))
        .map(|e| e.expect("a fixtures entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".injected.yaml")
        })
        .collect();
    inputs.sort();
    inputs
}

/// The golden output beside a plain manifest.
#[cfg(feature = "inject")]
pub fn injected_path(input: &Path) -> PathBuf {
    input.with_extension("injected.yaml")
}

/// Holds `actual` against the golden file `golden`; with
/// `KUBEXIT_UPDATE_GOLDEN=1` set, writes it there first.
#[cfg(feature = "inject")]
pub fn assert_golden(golden: &Path, actual: &str) {
    if std::env::var_os("KUBEXIT_UPDATE_GOLDEN").is_some() {
        fs::write(golden, actual).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    }
    let expected = fs::read_to_string(golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (KUBEXIT_UPDATE_GOLDEN=1 writes it)",
            golden.display()
        )
    });
    assert_eq!(actual, expected, "{} changed", golden.display());
}
