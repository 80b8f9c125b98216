//! kubexit's integration tests: one test binary, one pool of test threads.
//!
//! Every test here drives the built binary (`CARGO_BIN_EXE_kubexit`, or the
//! build named by `KUBEXIT_TEST_BINARY`) as users run it: real child
//! processes, real signals, real files in temporary graveyards, real
//! servers, and under `.ci/run` the real Kubernetes API server, real
//! containers and the release artefacts. One binary rather than one per
//! topic: it is linked once, and its tests share one parallel pool instead
//! of waiting for each other binary by binary.
//!
//! A module per topic, named for what it shows; `util` is the harness they
//! share (graveyards, the kubexit command, deadlines, servers, the API
//! server's scenes). Run a topic alone with its module path as the filter:
//!
//! ```sh
//! cargo test --test suite -- stopping::
//! cargo test --test suite -- processes:: signals::
//! ```
//!
//! Modules that need a cargo feature of the test crate itself (kubexit's
//! library types, its TLS stack) are compiled only with it; the slim
//! build's own behaviour is `slim`, run against the slim binary.

mod util;

mod configuration;
mod death_dependencies;
mod demo;
mod hostile;
mod liveness;
mod observing;
mod pods;
mod processes;
mod properties;
mod quitting;
mod readiness;
mod release;
mod restarts;
mod robustness;
mod sidecars;
mod signals;
mod slim;
mod stopping;
mod terminal;
mod tombstones;

#[cfg(feature = "webhook")]
mod cluster;
#[cfg(feature = "kubernetes")]
mod containers;
#[cfg(feature = "kubernetes")]
mod docs;
#[cfg(feature = "inject")]
mod inject;
#[cfg(feature = "inject")]
mod inject_kubernetes;
#[cfg(feature = "inject")]
mod inject_meshes;
#[cfg(feature = "kubernetes")]
mod kubernetes_api;
#[cfg(feature = "registry")]
mod registry;
#[cfg(feature = "webhook")]
mod webhook;
#[cfg(feature = "webhook")]
mod webhook_kubernetes;
