//! The slim build (`--no-default-features`) has no `kubexit inject` and no
//! `kubexit webhook`: it says so and exits 2, and a supervising kubexit
//! still runs a child named `inject`.
#![cfg(not(feature = "inject"))]

mod util;

use util::kubexit;

#[test]
fn inject_is_said_to_be_missing_from_the_slim_build() {
    for word in ["inject", "uninject"] {
        let done = kubexit().args([word, "job.yaml"]).run();
        assert_eq!(done.code(), 2, "{}", done.stderr);
        assert!(
            done.stderr
                .contains(&format!("`kubexit {word}` is not in this build")),
            "{}",
            done.stderr
        );
        assert_eq!(done.stdout, "");
    }
}

#[test]
fn webhook_is_said_to_be_missing_from_the_slim_build() {
    let done = kubexit()
        .args(["webhook", "--tls-cert", "c", "--tls-key", "k"])
        .run();
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert!(
        done.stderr
            .contains("`kubexit webhook` is not in this build of kubexit (built without the cargo feature `webhook`"),
        "{}",
        done.stderr
    );
}
