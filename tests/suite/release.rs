//! The release artefacts of `scripts/release.sh`, checked as a user (or a
//! scanner) would check them: the sums verify and cover every file; each
//! tarball holds static binaries of its architecture; each binary carries
//! its dependency tree (cargo-auditable's `.dep-v0` section), the full
//! build with the Kubernetes client and the slim one without; and each
//! image archive is an index over amd64 and arm64.
//!
//! The artefacts are looked for in `target/dist` (or
//! `KUBEXIT_RELEASE_DIR`); `.ci/run` makes them before the tests. Without
//! them the test is skipped, outside CI.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util;

fn release_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEXIT_RELEASE_DIR") {
        return PathBuf::from(dir);
    }
    crate::util::files::target_dir().join("dist")
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An ELF section's bytes, found through the section headers (ELF64,
/// little-endian: both architectures kubexit is released for).
fn elf_section(binary: &[u8], wanted: &str) -> Option<Vec<u8>> {
    let u16_at = |at: usize| u16::from_le_bytes(binary[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(binary[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(binary[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(&binary[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(binary[4], 2, "not ELF64");
    assert_eq!(binary[5], 1, "not little-endian");
    let (table, entry, count, names) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| table + i * entry;
    let strings = u64_at(header(names) + 0x18);
    (0..count).find_map(|i| {
        let h = header(i);
        let name_at = strings + u32_at(h);
        let name_end = binary[name_at..].iter().position(|&b| b == 0)? + name_at;
        (&binary[name_at..name_end] == wanted.as_bytes()).then(|| {
            let (offset, size) = (u64_at(h + 0x18), u64_at(h + 0x20));
            binary[offset..offset + size].to_vec()
        })
    })
}

/// The dependency tree cargo-auditable embedded: zlib-compressed JSON.
fn embedded_dependencies(binary: &Path) -> Value {
    let bytes = fs::read(binary).unwrap();
    let section = elf_section(&bytes, ".dep-v0").unwrap_or_else(|| {
        panic!(
            "{}: no .dep-v0 section (not built with cargo auditable)",
            binary.display()
        )
    });
    // python3's zlib, as tests need no compression crate for this alone.
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import sys, zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    python.stdin.take().unwrap().write_all(&section).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}: .dep-v0 is not zlib",
        binary.display()
    );
    serde_json::from_slice(&output.stdout).expect(".dep-v0 is JSON")
}

fn package_names(tree: &Value) -> Vec<String> {
    tree["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The architectures of an OCI archive's image index.
fn archive_architectures(archive: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    run("tar", &["-xf", archive.to_str().unwrap()], dir.path());
    let read =
        |path: PathBuf| -> Value { serde_json::from_slice(&fs::read(path).unwrap()).unwrap() };
    let blob = |digest: &str| {
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let mut index = read(dir.path().join("index.json"));
    // Named as the published image, so that a node that imports the
    // archive has what `kubexit inject` installs from.
    let name = archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".oci.tar")
        .replacen("kubexit-", "ghcr.io/kubexit/kubexit:", 1);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        Value::String(name),
        "{}: {index}",
        archive.display()
    );
    // The archive's index points at the image index pushed into it.
    if let [only] = index["manifests"].as_array().unwrap().as_slice()
        && only["mediaType"] == "application/vnd.oci.image.index.v1+json"
    {
        index = read(blob(only["digest"].as_str().unwrap()));
    }
    let mut arches: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            // Each entry is a whole image whose config says its platform.
            let manifest = read(blob(m["digest"].as_str().unwrap()));
            let config = read(blob(manifest["config"]["digest"].as_str().unwrap()));
            assert_eq!(
                config["config"]["Entrypoint"],
                serde_json::json!(["/bin/kubexit"])
            );
            config["architecture"].as_str().unwrap().to_owned()
        })
        .collect();
    arches.sort();
    arches
}

#[test]
fn the_release_artefacts_verify_and_carry_their_dependencies() {
    let dir = release_dir();
    if !dir.join("SHA256SUMS").exists() {
        util::skip(
            "the_release_artefacts_verify_and_carry_their_dependencies",
            &format!(
                "no {}/SHA256SUMS: run scripts/release.sh (.ci/run does)",
                dir.display()
            ),
        );
        return;
    }
    // The sums verify, and cover every file there.
    run("sha256sum", &["--check", "--strict", "SHA256SUMS"], &dir);
    let mut summed: Vec<String> = fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| l.split_once("  ").expect("HASH  NAME").1.to_owned())
        .collect();
    summed.sort();
    let mut present: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "SHA256SUMS")
        .collect();
    present.sort();
    assert_eq!(summed, present);

    let version = env!("CARGO_PKG_VERSION");
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let name = format!("kubexit-{version}-linux-{arch}");
        let unpacked = tempfile::tempdir().unwrap();
        let tarball = dir.join(format!("{name}.tar.gz"));
        run("tar", &["-xzf", tarball.to_str().unwrap()], unpacked.path());
        let licence = fs::read_to_string(unpacked.path().join(&name).join("LICENSE"))
            .unwrap_or_else(|e| panic!("{name}/LICENSE: {e}"));
        assert!(licence.contains("Apache License"), "{name}/LICENSE");
        for (binary, full) in [("kubexit", true), ("kubexit-slim", false)] {
            let path = unpacked.path().join(&name).join(binary);
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{name}/{binary}: {e}"));
            let e_machine = u16::from_le_bytes([bytes[18], bytes[19]]);
            assert_eq!(e_machine, machine, "{name}/{binary} is not {arch}");
            assert!(
                elf_section(&bytes, ".interp").is_none(),
                "{name}/{binary} is not static"
            );
            let tree = embedded_dependencies(&path);
            let root = tree["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["root"] == true)
                .expect("a root package");
            assert_eq!(root["name"], "kubexit");
            assert_eq!(root["version"], version);
            let names = package_names(&tree);
            assert!(
                names.iter().any(|n| n == "tokio"),
                "{name}/{binary}: {names:?}"
            );
            for client in ["kube-client", "rustls"] {
                assert_eq!(
                    names.iter().any(|n| n == client),
                    full,
                    "{name}/{binary}: {client} in {names:?}"
                );
            }
        }
    }

    for archive in [
        format!("kubexit-{version}.oci.tar"),
        format!("kubexit-{version}-scratch.oci.tar"),
    ] {
        assert_eq!(
            archive_architectures(&dir.join(&archive)),
            ["amd64", "arm64"],
            "{archive}"
        );
    }
}
