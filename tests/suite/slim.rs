//! What the slim build (`--no-default-features`) does differently: it has
//! no Kubernetes client, no TLS, no `kubexit inject` and no `kubexit
//! webhook`, and says so, exit status 2, naming the build to use. Its
//! supervision is the full build's code, run against the slim binary by
//! `.ci/run` (the process tests with `KUBEXIT_TEST_BINARY`).
//!
//! The binary under test is the slim one of the static builds
//! (`target/static/kubexit-slim`, which `.ci/run` builds first, or
//! `KUBEXIT_SLIM_BINARY`), or the tests' own binary when the tests were
//! themselves built without default features. Without one, outside CI,
//! each test says that it skips.

use std::path::PathBuf;

use crate::util::{self, Kubexit, Yard, skip};

/// The slim binary, if there is one to test.
fn slim_binary() -> Option<PathBuf> {
    if cfg!(not(any(
        feature = "tls",
        feature = "kubernetes",
        feature = "inject",
        feature = "webhook"
    ))) {
        return Some(util::kubexit_binary());
    }
    if let Some(path) = std::env::var_os("KUBEXIT_SLIM_BINARY") {
        return Some(PathBuf::from(path));
    }
    let built = util::files::target_dir().join("static/kubexit-slim");
    built.is_file().then_some(built)
}

/// kubexit, the slim build; `None` (said) when there is none.
fn slim(test: &str) -> Option<Kubexit> {
    match slim_binary() {
        Some(binary) => Some(util::kubexit_at(&binary)),
        None => {
            skip(
                test,
                "no slim binary: build it with scripts/build-static.sh, or set KUBEXIT_SLIM_BINARY",
            );
            None
        }
    }
}

/// Runs the slim kubexit and expects exit 2, `message` in its log, and no
/// child started.
fn refused(mut k: Kubexit, message: &str) {
    let done = k.run();
    assert_eq!(done.code(), 2, "not refused:\n{}", done.stderr);
    util::assert_contains(&done.stderr, message);
    assert!(!done.stdout.contains("started"), "the child ran");
}

#[test]
fn inject_is_said_to_be_missing_from_the_slim_build() {
    for word in ["inject", "uninject"] {
        let Some(mut k) = slim("inject_is_said_to_be_missing_from_the_slim_build") else {
            return;
        };
        let done = k.args([word, "job.yaml"]).run();
        assert_eq!(done.code(), 2, "{}", done.stderr);
        util::assert_contains(
            &done.stderr,
            &format!("`kubexit {word}` is not in this build"),
        );
        assert_eq!(done.stdout, "");
    }
}

#[test]
fn webhook_is_said_to_be_missing_from_the_slim_build() {
    let Some(mut k) = slim("webhook_is_said_to_be_missing_from_the_slim_build") else {
        return;
    };
    let done = k
        .args(["webhook", "--tls-cert", "c", "--tls-key", "k"])
        .run();
    assert_eq!(done.code(), 2, "{}", done.stderr);
    util::assert_contains(
        &done.stderr,
        "`kubexit webhook` is not in this build of kubexit (built without the cargo feature `webhook`",
    );
}

/// No Kubernetes client: API mode is a configuration error that says which
/// build to use.
#[test]
fn api_mode_is_refused_by_the_slim_build() {
    let Some(mut k) = slim("api_mode_is_refused_by_the_slim_build") else {
        return;
    };
    let yard = Yard::new();
    k.configure("client", &yard);
    k.env("KUBEXIT_POD_NAME", "job-abc")
        .env("KUBEXIT_BIRTH_DEPS", "server")
        .sh("echo started");
    refused(
        k,
        "KUBEXIT_POD_NAME (--pod-name): Kubernetes API mode for birth dependencies is not in \
         this build (the slim build, without the kubernetes feature); use the full build",
    );
}

/// No TLS: an https address, wherever kubexit would call one, is refused
/// before the child starts, naming the setting.
#[test]
fn https_is_refused_by_the_slim_build() {
    for (variable, value) in [
        ("KUBEXIT_READY_PROBE", "https://127.0.0.1:8443/ready"),
        ("KUBEXIT_BIRTH_PROBES", "https://127.0.0.1:8443/ready"),
        ("KUBEXIT_QUIT", "https://127.0.0.1:8443/quit"),
    ] {
        let Some(mut k) = slim("https_is_refused_by_the_slim_build") else {
            return;
        };
        let yard = Yard::new();
        k.configure("app", &yard);
        k.env(variable, value).sh("echo started");
        refused(
            k,
            &format!(
                "{variable} ({}): https needs kubexit built with the tls feature",
                flag_of(variable)
            ),
        );
    }
}

/// `--ready-probe` for `KUBEXIT_READY_PROBE`.
fn flag_of(variable: &str) -> String {
    let name = variable.trim_start_matches("KUBEXIT_");
    format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
}
