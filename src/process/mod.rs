//! Processes: the child kubexit supervises, the signals it hears, and the
//! reaping of everything that ends under it.
//!
//! [`signals`] hears and names signals, [`child`] starts the command and
//! sends signals, [`reaper`] alone calls `waitpid` (and `waitid`), and
//! [`table`] reads the part of the process table that kubexit's children
//! span. What a signal means, and when to stop whom, is the supervisor's
//! business.

pub mod child;
pub mod reaper;
pub mod signals;
pub mod table;
