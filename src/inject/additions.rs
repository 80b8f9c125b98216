//! What an injection adds to a pod, by name and by path: the two volumes
//! and where they are mounted, the init container that installs kubexit,
//! and the first word of a wrapped command, which is where kubexit is.
//!
//! Three layers need the same names: `plan` checks that none of them is
//! taken by the pod's own ([`crate::inject::plan::check_room`]), `pod` adds
//! them, and `record` recognises what was added when it takes it out
//! again. They are declared here, once, for the three.

use super::vocabulary::Install;

/// The graveyard volume, and where it is mounted in every coordinated
/// container (`KUBEXIT_GRAVEYARD`).
pub const GRAVEYARD_VOLUME: &str = "graveyard";
pub const GRAVEYARD_PATH: &str = "/graveyard";
/// The volume kubexit is installed into, and where it is mounted.
pub const BINARY_VOLUME: &str = "kubexit";
pub const BINARY_DIR: &str = "/kubexit";
/// The init container that installs kubexit.
pub const INSTALL_CONTAINER: &str = "kubexit";
/// Where the installed kubexit is, in every coordinated container: the
/// first word of its command.
pub const KUBEXIT_PATH: &str = "/kubexit/kubexit";
/// The first word of a command when the images carry kubexit
/// (`kubexit.io/install: none`): a name the container's PATH resolves, as
/// it resolves any other command, so that each image keeps kubexit where
/// it put it (`/usr/local/bin`, `/bin`).
pub const KUBEXIT_ON_PATH: &str = "kubexit";

/// The first word of every wrapped command under `install`.
pub fn kubexit_word(install: Install) -> &'static str {
    match install {
        Install::Copy | Install::SelfInstall => KUBEXIT_PATH,
        Install::InImage => KUBEXIT_ON_PATH,
    }
}
