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
pub(crate) mod files;
pub mod graveyard;
#[cfg(feature = "inject")]
pub mod inject;
pub mod json;
pub(crate) mod memory;
pub(crate) mod process;
pub(crate) mod quit;
pub(crate) mod random;
pub(crate) mod readiness;
#[cfg(feature = "registry")]
pub mod registry;
pub(crate) mod supervisor;
#[cfg(feature = "webhook")]
pub mod webhook;

// The supervisor's and the webhook's threads take small blocks from an arena
// and keep them for reuse (`memory`); other threads allocate as before.
#[global_allocator]
static ALLOCATOR: memory::Allocator = memory::Allocator;

pub use cli::exit::{EXIT_CONFIG, EXIT_FAILURE};
pub use cli::run;

/// What the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod testing {
    /// The event loop kubexit runs in: one thread, I/O and timers.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }
}
