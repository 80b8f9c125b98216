//! The command line's other modes and kubexit's voice: the status view
//! (`--status`), self-install (`--install`), and the log on stderr.

pub mod install;
pub mod log;
pub mod status;
