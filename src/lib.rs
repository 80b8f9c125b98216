//! kubexit: a command supervisor for coordinated start-up and termination.
//!
//! `kubexit CMD ARGS...` runs one command, records its life as a tombstone
//! in a shared directory (the graveyard), and stops it when a process it
//! depends on dies. Data flows one way through the modules:
//!
//! ```text
//! command line + environment ─▶ config ─▶ supervisor (one event loop) ─▶ outcome
//!                                            │  ▲                          │
//!                 signals, reaper, child ────┘  └─ graveyard, dependencies  └─▶ tombstone + exit status
//! ```
//!
//! [`run`] is the whole program (the `cli` module's); `main.rs` only calls
//! it.

pub(crate) mod cli;
pub mod config;
pub(crate) mod dependencies;
pub mod duration;
pub mod graveyard;
#[cfg(feature = "inject")]
pub mod inject;
pub mod json;
pub(crate) mod process;
pub(crate) mod readiness;
pub(crate) mod supervisor;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use cli::{EXIT_CONFIG, EXIT_FAILURE, run};
