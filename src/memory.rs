//! Memory: small blocks kept for reuse, and a first supply of them that
//! costs no system call.
//!
//! musl's allocator, which the static builds use, hands out small blocks
//! from page-sized groups that it maps and unmaps as they fill and empty.
//! Two patterns of kubexit's pay for that. A start-up allocates a few
//! hundred small blocks, of a dozen sizes, and musl maps a group for each
//! size: two dozen `mmap` calls and as many page faults, each new group's
//! pages touched sparsely, for a few tens of KiB in all. A webhook review
//! allocates a few thousand blocks and frees them all before the next one,
//! and musl mapped and unmapped groups at every review (a third of the
//! server's time, BENCHMARKS.md).
//!
//! [`Allocator`] serves both. On a thread that asked for it
//! ([`keep_on_this_thread`]: the supervisor's and the webhook's), a small
//! block (up to [`LARGEST`] bytes) comes from the blocks that thread freed
//! before, in one list per power-of-two size, and otherwise from the
//! [`ARENA_BYTES`] of the arena, a static area taken from the front, block
//! after block, whose pages the kernel maps as they are first touched: a
//! start-up's blocks lie together on a few pages. A freed block is kept,
//! up to [`KEPT`] blocks or [`KEPT_BYTES`] per list. Everything else goes
//! straight to the system allocator: large blocks, a thread that did not
//! ask (its blocks freed there go back to the system, or, from the arena,
//! are left alone), and every new small block once the arena is used up
//! (kept blocks are still reused first). For a block
//! to be reusable whatever thread frees it, every small request is rounded
//! up to its power of two on every thread. A kept block is never given
//! back, not even when its thread ends: what one thread keeps is bounded
//! by 1.75 MiB (512 blocks of each size up to 512 bytes, 504 KiB in all,
//! and 256 KiB of each of the five larger ones).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest block kept, in bytes: musl maps a group of its own for
/// blocks of a few KiB, so those churn too.
pub const LARGEST: usize = 16 * 1024;
/// The smallest size a small request is rounded up to: room for the link
/// of a kept block, at the alignment musl gives every block.
const SMALLEST: usize = 16;
const ALIGN: usize = 16;
/// Sizes 16, 32, …, 16384.
const CLASSES: usize = 11;
/// Blocks kept per size, per thread, at most.
pub const KEPT: usize = 512;
/// Bytes kept per size, per thread, at most.
pub const KEPT_BYTES: usize = 256 * 1024;

/// The arena's size. Its pages cost nothing until touched; a supervisor's
/// start-up uses a fraction of it.
pub const ARENA_BYTES: usize = 128 * 1024;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: the arena is only ever reached through `from_arena`, which hands
// each byte range out once, to one caller, through an atomic counter.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
/// The arena's first byte not handed out yet (past the end: used up).
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// A fresh block of `size` bytes (a class's size) from the arena.
fn from_arena(size: usize) -> Option<*mut u8> {
    let start = ARENA_USED.fetch_add(size, Ordering::Relaxed);
    if start + size > ARENA_BYTES {
        return None;
    }
    // SAFETY: `start..start + size` lies within the arena, and the counter
    // hands it to this caller alone. Class sizes are multiples of ALIGN
    // and the arena starts page-aligned, so the block is aligned too.
    Some(unsafe { ARENA.0.get().cast::<u8>().add(start) })
}

fn in_arena(block: *mut u8) -> bool {
    let start = ARENA.0.get().cast::<u8>() as usize;
    (start..start + ARENA_BYTES).contains(&(block as usize))
}

/// Whether this thread keeps blocks.
fn keeps() -> bool {
    KEPT_HERE.try_with(|kept| kept.on.get()).unwrap_or(false)
}

/// A small block of class `index`: a kept one, or, on a thread that keeps
/// blocks, a fresh one from the arena.
fn small(index: usize, size: usize) -> Option<*mut u8> {
    take(index).or_else(|| if keeps() { from_arena(size) } else { None })
}

/// How many blocks of class `index` a thread keeps.
const fn kept_at_most(index: usize) -> usize {
    let size = SMALLEST << index;
    if KEPT_BYTES / size < KEPT {
        KEPT_BYTES / size
    } else {
        KEPT
    }
}

/// kubexit's global allocator.
pub struct Allocator;

struct Kept {
    on: Cell<bool>,
    heads: [Cell<*mut u8>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

thread_local! {
    // Constant-initialised and without a destructor: usable from the
    // allocator at any point of a thread's life.
    static KEPT_HERE: Kept = const {
        Kept {
            on: Cell::new(false),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    };
}

/// From now on, this thread keeps the small blocks it frees for reuse.
pub fn keep_on_this_thread() {
    KEPT_HERE.with(|kept| kept.on.set(true));
}

/// The size class of a small request: its index, and the size actually
/// allocated.
fn class(layout: Layout) -> Option<(usize, usize)> {
    if layout.align() > ALIGN || layout.size() > LARGEST {
        return None;
    }
    let size = layout.size().max(SMALLEST).next_power_of_two();
    Some((
        size.trailing_zeros() as usize - SMALLEST.trailing_zeros() as usize,
        size,
    ))
}

fn system_layout(size: usize) -> Layout {
    // SAFETY: `size` is a power of two no larger than LARGEST and ALIGN is a
    // power of two: a valid layout.
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

/// A kept block of class `index`, if this thread keeps one.
fn take(index: usize) -> Option<*mut u8> {
    KEPT_HERE
        .try_with(|kept| {
            let head = kept.heads[index].get();
            if head.is_null() {
                return None;
            }
            // SAFETY: a kept block holds the address of the next one in its
            // first bytes (see `keep`), and nobody else owns it.
            let next = unsafe { head.cast::<*mut u8>().read() };
            kept.heads[index].set(next);
            kept.counts[index].set(kept.counts[index].get() - 1);
            Some(head)
        })
        .ok()
        .flatten()
}

/// Keeps `block` of class `index` if this thread keeps blocks and has room.
fn keep(index: usize, block: *mut u8) -> bool {
    KEPT_HERE
        .try_with(|kept| {
            if !kept.on.get() || usize::from(kept.counts[index].get()) >= kept_at_most(index) {
                return false;
            }
            // SAFETY: the block is at least SMALLEST bytes, aligned to
            // ALIGN, and no longer used by anyone: it can hold the link.
            unsafe { block.cast::<*mut u8>().write(kept.heads[index].get()) };
            kept.heads[index].set(block);
            kept.counts[index].set(kept.counts[index].get() + 1);
            true
        })
        .unwrap_or(false)
}

// SAFETY: every block comes from `System` or the arena; a small one is
// always allocated with its class's size and alignment, so any block of the
// same class can stand for it; one from `System` is returned to it with that
// same layout, and one from the arena never is.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some((index, size)) => match small(index, size) {
                Some(block) => block,
                // SAFETY: a valid, non-zero layout.
                None => unsafe { System.alloc(system_layout(size)) },
            },
            // SAFETY: the caller's layout, as given.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some((index, size)) => match small(index, size) {
                Some(block) => {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { block.write_bytes(0, layout.size()) };
                    block
                }
                // SAFETY: a valid, non-zero layout.
                None => unsafe { System.alloc_zeroed(system_layout(size)) },
            },
            // SAFETY: the caller's layout, as given.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(layout) {
            Some((index, size)) => {
                if !keep(index, block) && !in_arena(block) {
                    // SAFETY: allocated by System with this very layout.
                    unsafe { System.dealloc(block, system_layout(size)) }
                }
            }
            // SAFETY: allocated by System with the caller's layout.
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to the
        // alignment, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            (Some((old, _)), Some((new, _))) if old == new => block,
            // SAFETY: a large block stays with System, as the caller gave it.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a fresh block of the new layout, the old one's
                // bytes that fit copied into it, then the old one freed
                // through the path that allocated it.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_requests_fall_in_power_of_two_classes_and_large_ones_in_none() {
        let at = |size, align| class(Layout::from_size_align(size, align).unwrap());
        assert_eq!(at(0, 1), Some((0, 16)));
        assert_eq!(at(16, 8), Some((0, 16)));
        assert_eq!(at(17, 8), Some((1, 32)));
        assert_eq!(at(1024, 16), Some((6, 1024)));
        assert_eq!(at(1025, 8), Some((7, 2048)));
        assert_eq!(at(16384, 8), Some((10, 16384)));
        assert_eq!(at(16385, 8), None);
        assert_eq!(at(64, 32), None);
    }

    /// The bound the module essay gives: what one thread may keep.
    #[test]
    fn what_one_thread_keeps_is_at_most_1_75_mib() {
        let bytes = |classes: std::ops::Range<usize>| -> usize {
            classes.map(|i| kept_at_most(i) * (SMALLEST << i)).sum()
        };
        assert_eq!(bytes(0..6), 504 * 1024, "16 to 512 bytes");
        assert_eq!(bytes(6..CLASSES), 5 * KEPT_BYTES, "1 KiB to 16 KiB");
        assert!(bytes(0..CLASSES) <= 1792 * 1024);
    }

    #[test]
    fn blocks_kept_on_a_thread_come_back_and_hold_what_is_written() {
        std::thread::spawn(|| {
            keep_on_this_thread();
            // Vectors and strings that grow through the classes and out of
            // them, freed and allocated again, each checked.
            for round in 0..50u32 {
                let mut values: Vec<Vec<u32>> = Vec::new();
                for n in 0..300u32 {
                    let n = n * 20;
                    let v: Vec<u32> = (0..(n % 6000)).map(|i| i ^ round).collect();
                    values.push(v);
                }
                let text: String = (0..round * 40)
                    .map(|i| char::from(b'a' + (i % 26) as u8))
                    .collect();
                for (n, v) in values.iter().enumerate() {
                    let n = n as u32 * 20;
                    assert_eq!(v.len() as u32, n % 6000);
                    assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32 ^ round));
                }
                assert_eq!(text.len() as u32, round * 40);
                let zeroed = vec![0u64; (round as usize % 100) + 1];
                assert!(zeroed.iter().all(|x| *x == 0));
            }
            let counts: Vec<u16> =
                KEPT_HERE.with(|kept| kept.counts.iter().map(Cell::get).collect());
            assert!(counts.iter().any(|c| *c > 0), "{counts:?}");
            assert!(
                counts
                    .iter()
                    .enumerate()
                    .all(|(i, c)| usize::from(*c) <= kept_at_most(i)),
                "{counts:?}"
            );
            assert_eq!(kept_at_most(0), KEPT);
            assert_eq!(kept_at_most(10), 16);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_block_freed_on_another_thread_is_safe_to_keep_there() {
        let made: Vec<Box<[u8; 24]>> = (0..100).map(|i| Box::new([i as u8; 24])).collect();
        std::thread::spawn(move || {
            keep_on_this_thread();
            drop(made);
            // Reused as 32-byte blocks: the class of a 24-byte request.
            let again: Vec<Box<[u8; 32]>> = (0..100).map(|i| Box::new([i as u8; 32])).collect();
            assert!(
                again
                    .iter()
                    .enumerate()
                    .all(|(i, b)| b.iter().all(|x| *x == i as u8))
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_keeping_thread_draws_from_the_arena_and_any_thread_may_free_its_blocks() {
        let blocks: Vec<Box<[u8; 40]>> = std::thread::spawn(|| {
            keep_on_this_thread();
            (0..64).map(|i| Box::new([i as u8; 40])).collect()
        })
        .join()
        .unwrap();
        // Other tests of this process draw from the same arena, and may
        // have used it up.
        let drawn = blocks
            .iter()
            .filter(|b| in_arena(b.as_ptr().cast_mut()))
            .count();
        assert!(
            drawn > 0 || ARENA_USED.load(Ordering::Relaxed) >= ARENA_BYTES,
            "no block from the arena"
        );
        assert!(
            blocks
                .iter()
                .enumerate()
                .all(|(i, b)| b.iter().all(|x| *x == i as u8))
        );
        // Freed on a thread that does not keep blocks: the arena's are left
        // alone, the others go back to the system.
        drop(blocks);
        let again: Vec<Box<[u8; 40]>> = (0..64).map(|i| Box::new([i as u8; 40])).collect();
        assert!(again.iter().all(|b| !in_arena(b.as_ptr().cast_mut())));
    }
}
