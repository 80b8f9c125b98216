//! The README's first command keeps working: the Romeo-and-Juliet demo.

use std::process::Command;

#[test]
fn the_readme_demo_tells_the_story() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/romeo-and-juliet.sh");
    let output = Command::new("bash")
        .arg(script)
        .env("KUBEXIT_BIN", crate::util::kubexit_binary())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "juliet: stopped, exiting",
        "[kubexit juliet] New death: romeo",
        "romeo's kubexit exited with status 3",
        "juliet's kubexit exited with status 0",
        "Reason: \"stopped because romeo died; the child exited with status 0\"",
    ] {
        assert!(
            stdout.contains(line),
            "{line:?} missing from the demo:\n{stdout}"
        );
    }
}
