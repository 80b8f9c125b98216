//! The kubexit binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    kubexit::run()
}
