//! The exit statuses of kubexit's own failures, which every mode of the
//! command line ends with; the supervised child's outcome maps to its own
//! (`supervisor::outcome`).

/// Exit status for a configuration error, as upstream.
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when kubexit itself fails.
pub const EXIT_FAILURE: u8 = 1;
