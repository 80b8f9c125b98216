//! Blocking calls kept off the event loop: a name lookup, a file's status.
//!
//! Some questions a probe asks can only be asked by a call that blocks and
//! cannot be cancelled: `getaddrinfo` waits out `resolv.conf`'s timeouts
//! (10 s and more) when no name server answers, and `lstat` waits for as
//! long as the file system does (forever, on a hung NFS or FUSE mount). On
//! the loop's thread, such a call would stall everything kubexit watches,
//! the SIGKILL deadline included.
//!
//! So a [`Detached`] runs each call on a thread of its own and waits for
//! its answer only as long as its caller does: an attempt that runs out of
//! time drops the wait and leaves the call running, and the next attempt
//! waits for that same call instead of starting another, so that at most
//! one call is in flight per probe however long it hangs. Nothing ever
//! joins the thread, so kubexit's exit never waits for one: exiting ends
//! every thread, one in a hung `lstat` too (FUSE and NFS wait for their
//! servers in waits that a kill ends).
//!
//! The threads are plain `std` threads rather than tokio's blocking pool:
//! tokio panics when the system refuses it a thread (a pod at its pids
//! limit, say), where a `std` spawn says so, and the attempt fails with
//! that reason; and the threads are no business of the runtime's shutdown.
//! What such a thread allocates comes from the system allocator (only the
//! loop's own thread keeps blocks for reuse, the `memory` module), and a
//! block passed between the two may be freed on either: every small block
//! has its size class on every thread, so the system takes back any block
//! it gave, and a block of the arena freed elsewhere is left alone.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use tokio::sync::watch;

/// One kind of blocking call of one probe, at most one in flight; clones
/// share it.
pub struct Detached<T> {
    /// The thread's name, as `ps -L` shows it.
    name: &'static str,
    in_flight: Rc<RefCell<Option<watch::Receiver<Option<T>>>>>,
}

impl<T> Clone for Detached<T> {
    fn clone(&self) -> Detached<T> {
        Detached {
            name: self.name,
            in_flight: Rc::clone(&self.in_flight),
        }
    }
}

/// Why a call gave no answer.
#[derive(Debug)]
pub enum Unanswered {
    /// No thread could be started for it.
    NoThread(io::Error),
    /// Its thread ended without answering (it panicked).
    Lost,
}

impl<T: Clone + Send + Sync + 'static> Detached<T> {
    pub fn new(name: &'static str) -> Detached<T> {
        Detached {
            name,
            in_flight: Rc::default(),
        }
    }

    /// The answer of `call`, run on a thread of its own; or, when the call
    /// started before has not answered yet, that call's answer (`call` is
    /// then dropped unused). Cancel-safe: dropped before the answer, the
    /// call goes on for the next caller.
    pub async fn run(&self, call: impl FnOnce() -> T + Send + 'static) -> Result<T, Unanswered> {
        let mut answer = {
            let mut in_flight = self.in_flight.borrow_mut();
            match &*in_flight {
                Some(answer) => answer.clone(),
                None => {
                    let answer = self.start(call).map_err(Unanswered::NoThread)?;
                    *in_flight = Some(answer.clone());
                    answer
                }
            }
        };
        let result = match answer.wait_for(Option::is_some).await {
            Ok(found) => found.clone().ok_or(Unanswered::Lost),
            Err(_) => Err(Unanswered::Lost),
        };
        // This call is spent; the next caller asks afresh.
        *self.in_flight.borrow_mut() = None;
        result
    }

    fn start(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<watch::Receiver<Option<T>>> {
        let (tell, answer) = watch::channel(None);
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                let _ = tell.send(Some(call()));
            })?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::testing::runtime;

    #[test]
    fn a_call_that_outlives_its_caller_answers_the_next_one_and_no_second_starts() {
        let rt = runtime();
        let detached: Detached<u32> = Detached::new("test-call");
        let (release, released) = mpsc::channel::<()>();
        let first = rt.block_on(async {
            let held = detached.run(move || {
                let _ = released.recv();
                1
            });
            tokio::time::timeout(Duration::from_millis(20), held).await
        });
        assert!(first.is_err(), "the first call answered while held");
        // Still in flight: this call is not started; the first one answers.
        release.send(()).unwrap();
        let second = rt.block_on(detached.run(|| 2)).ok();
        assert_eq!(second, Some(1));
        // Spent: the next caller asks afresh.
        assert_eq!(rt.block_on(detached.run(|| 3)).ok(), Some(3));
    }
}
