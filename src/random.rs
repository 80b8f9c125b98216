//! Random names, for what must be unique in a pod.
//!
//! Every container of a pod may run kubexit as PID 1 of its own PID
//! namespace, so a pid tells nothing apart there: temporary files in the
//! shared graveyard, the notify socket in the pod's shared network
//! namespace and an install's temporary file take their names from here.
//! Callers still create names exclusively and draw again when one is taken.

use std::sync::atomic::{AtomicU64, Ordering};

use nix::libc;

/// 64 random bits from the kernel; should that fail (no entropy yet at
/// boot, an ancient kernel), a mix of the clock, the pid and a counter,
/// which differs between calls and, through the nanoseconds, between
/// processes.
pub(crate) fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = jiff::Timestamp::now().as_nanosecond() as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    (nanos ^ (u64::from(std::process::id()) << 40))
        .wrapping_add(count.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
