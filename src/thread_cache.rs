//! [`ThreadCache`]: a small per-thread cache of freed blocks in front of the system
//! allocator, for the musl build.
//!
//! musl's `malloc` takes one lock for the whole process once a second thread exists.
//! A FastCGI request allocates a dozen small blocks (the `http` types: header map,
//! extensions, URI), so with several worker threads on few CPUs the threads queue on
//! that lock: a holder is preempted, the others sleep on its futex, and every release
//! wakes one. With 8 threads on 2 CPUs, 9 `futex` calls per request were counted, and
//! the musl build served less than half the kept-alive requests of the same build run
//! as 8 one-thread processes (BENCHMARKS.md). glibc's `malloc` has per-thread caches of
//! its own and does not need this.
//!
//! Each thread keeps up to 32 freed blocks of each of 28 size classes (16 bytes to
//! 4 KiB) and at most 64 KiB in all; a block that does not fit, a larger one, or one
//! aligned to more than 16 bytes goes to the system allocator as usual. A block freed
//! by another thread than the one that allocated it joins the freeing thread's cache
//! (every block of a class has the class's size, so any thread can reuse or release
//! it). A thread's cache is handed back to the system allocator when the thread exits.
//! The cached blocks' addresses take 7 KiB of thread-local storage per thread; the
//! blocks themselves are not written to while cached.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The alignment of every cached block (and the most a cached request may ask for).
const ALIGN: usize = 16;
/// The largest size that is cached.
const MAX_SIZE: usize = 4096;
/// 16-byte steps up to 128 bytes (8 classes), then four per doubling up to 4 KiB (20).
const CLASSES: usize = 28;
/// Blocks kept per class, and bytes kept in all, per thread.
const PER_CLASS: u16 = 32;
const BUDGET: usize = 64 * 1024;

/// The size class of a request of `size` bytes, 1 to [`MAX_SIZE`].
#[inline]
fn class_of(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) - 1;
    }
    let s = size - 1;
    let p = (usize::BITS - 1 - s.leading_zeros()) as usize; // 7 to 11
    8 + (p - 7) * 4 + ((s >> (p - 2)) & 3)
}

/// The size of every block of class `c`.
const fn class_size(c: usize) -> usize {
    if c < 8 {
        return (c + 1) * 16;
    }
    let p = (c - 8) / 4 + 7;
    (4 + (c - 8) % 4 + 1) << (p - 2)
}

/// [`class_size`] of every class, looked up on each call rather than worked out.
const CLASS_SIZES: [usize; CLASSES] = {
    let mut sizes = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        sizes[c] = class_size(c);
        c += 1;
    }
    sizes
};

/// The class a layout is cached in, if it is.
#[inline]
fn cached_class(layout: Layout) -> Option<usize> {
    (layout.size() != 0 && layout.size() <= MAX_SIZE && layout.align() <= ALIGN)
        .then(|| class_of(layout.size()))
}

/// A cached block by its address. The pointer a block is freed with may carry only the
/// freed value's own range (a `Box<[u8; 24]>` in a 32-byte block): blocks are kept
/// and handed out by address instead, with the provenance their allocation exposed
/// when it came from the system allocator ([`from_system`]). Both are no-ops in the
/// machine code; they keep Miri's Stacked Borrows from taking the block's next user
/// for an access out of range. (Nor is a freed block written to while it is cached:
/// the addresses are kept beside it, not linked through it, so `dealloc` does not
/// touch memory the freed `Box` still guards.)
#[inline]
fn block(addr: usize) -> *mut u8 {
    ptr::with_exposed_provenance_mut(addr)
}

/// A class-sized block just allocated by the system allocator (or null).
#[inline]
fn from_system(p: *mut u8) -> *mut u8 {
    let _ = p.expose_provenance();
    p
}

#[inline]
fn class_layout(c: usize) -> Layout {
    // SAFETY: a non-zero multiple of 16 below 4 KiB, with a power-of-two alignment.
    unsafe { Layout::from_size_align_unchecked(class_size(c), ALIGN) }
}

/// The thread's cache has not been used yet, holds blocks (and will be handed back at
/// the thread's exit), or was handed back (the thread is exiting: nothing is kept).
#[derive(Clone, Copy, PartialEq)]
enum State {
    New,
    Live,
    Dead,
}

struct Cache {
    /// Each class's free blocks by address ([`block`]): the first `counts[c]` of
    /// `slots[c]`, the last freed last.
    slots: [[usize; PER_CLASS as usize]; CLASSES],
    counts: [u16; CLASSES],
    bytes: usize,
    /// [`BUDGET`] while the cache is live, 0 before and after: the one test a free
    /// makes for both the budget and the state (a fresh cache goes the slow way once).
    limit: usize,
    state: State,
}

impl Cache {
    #[inline]
    fn pop(&mut self, c: usize) -> Option<*mut u8> {
        let n = self.counts[c].checked_sub(1)?;
        self.counts[c] = n;
        self.bytes -= CLASS_SIZES[c];
        Some(block(self.slots[c][usize::from(n)]))
    }

    /// Keeps the block `freed` (of class `c`) if the cache is live and has room for it.
    #[inline]
    fn push_live(&mut self, c: usize, freed: *mut u8) -> bool {
        let size = CLASS_SIZES[c];
        let n = self.counts[c];
        if n >= PER_CLASS || self.bytes + size > self.limit {
            return false;
        }
        self.slots[c][usize::from(n)] = freed.addr();
        self.counts[c] = n + 1;
        self.bytes += size;
        true
    }

    /// Keeps the block `freed` (of class `c`), making a fresh cache live first, or
    /// says it must go to the system allocator.
    fn push(&mut self, c: usize, freed: *mut u8) -> bool {
        if self.state == State::New {
            if !register_exit() {
                self.state = State::Dead;
                return false;
            }
            self.state = State::Live;
            self.limit = BUDGET;
        }
        self.push_live(c, freed)
    }

    /// Hands every block back; from now on nothing is kept.
    fn release(&mut self) {
        self.state = State::Dead;
        self.limit = 0;
        for c in 0..CLASSES {
            while let Some(b) = self.pop(c) {
                // SAFETY: every cached block of class `c` came from System with this layout.
                unsafe { System.dealloc(b, class_layout(c)) };
            }
        }
    }
}

thread_local! {
    // No destructor (so no allocation to register one): `register_exit` releases it.
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache {
            slots: [[0; PER_CLASS as usize]; CLASSES],
            counts: [0; CLASSES],
            bytes: 0,
            limit: 0,
            state: State::New,
        })
    };
}

/// Runs `f` on this thread's cache (`None` if the thread's storage is gone).
#[inline]
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    // SAFETY: the cache is this thread's own, and `f` does not reach it again (it
    // calls only the system allocator and pthread functions).
    CACHE.try_with(|c| f(unsafe { &mut *c.get() })).ok()
}

/// The pthread key whose destructor releases an exiting thread's cache (key + 1; 0:
/// not created yet).
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

extern "C" fn release_at_exit(_: *mut libc::c_void) {
    with_cache(Cache::release);
}

/// Arranges for this thread's cache to be released when the thread exits. Neither
/// glibc's nor musl's `pthread_key_create`/`pthread_setspecific` call `malloc` for the
/// first keys, and neither ever calls this allocator.
fn register_exit() -> bool {
    let mut k = EXIT_KEY.load(Ordering::Acquire);
    if k == 0 {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: creates a key with a destructor that only releases the cache.
        if unsafe { libc::pthread_key_create(&mut key, Some(release_at_exit)) } != 0 {
            return false;
        }
        k = match EXIT_KEY.compare_exchange(
            0,
            key as usize + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => key as usize + 1,
            Err(other) => {
                // SAFETY: our own key, never used.
                unsafe { libc::pthread_key_delete(key) };
                other
            }
        };
    }
    // A non-null value, so the destructor runs at the thread's exit.
    // SAFETY: a key created above; the value is only a marker.
    unsafe { libc::pthread_setspecific((k - 1) as libc::pthread_key_t, ptr::dangling()) == 0 }
}

/// A global allocator for the musl build: a small per-thread cache of freed blocks in
/// front of the system allocator, so that worker threads do not queue on musl's
/// process-wide `malloc` lock. Install it in the program's `main.rs`:
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();
/// # fn main() {}
/// ```
///
/// Each thread keeps at most 64 KiB of freed blocks of up to 4 KiB; everything else
/// goes to the system allocator directly. With glibc it changes little (glibc caches
/// per thread too), and a single-threaded process (one worker, as under mod_fcgid)
/// does not need it with either.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadCache;

impl ThreadCache {
    /// The allocator, for a `#[global_allocator]` static.
    pub const fn new() -> ThreadCache {
        ThreadCache
    }
}

// The ways out of the cache are apart from `alloc` and `dealloc`, so those two save
// few registers on the way in: a free went from 59 to 38 instructions and an
// allocation from 39 to 35 (callgrind, on the request path).

/// A block of class `c` from the system allocator (the thread's cache has none).
#[cold]
#[inline(never)]
fn alloc_class(c: usize) -> *mut u8 {
    // SAFETY: a valid non-zero layout.
    from_system(unsafe { System.alloc(class_layout(c)) })
}

/// Frees a block of class `c` that the live cache had no room for: a fresh cache is
/// made live and keeps it; a full or exiting one hands it to the system allocator.
///
/// # Safety
/// `ptr` was allocated by [`ThreadCache`] as a block of class `c`.
#[cold]
#[inline(never)]
unsafe fn dealloc_class(ptr: *mut u8, c: usize) {
    if with_cache(|cache| cache.push(c, ptr)) != Some(true) {
        // SAFETY: allocated as a block of class `c` (the caller's promise).
        unsafe { System.dealloc(block(ptr.addr()), class_layout(c)) }
    }
}

// SAFETY: blocks come from System with the layout their class (or the request) names,
// and go back to System with that same layout; a cached block is handed out once.
unsafe impl GlobalAlloc for ThreadCache {
    // Out of line: inlined into every allocation site, it made the binary 70 KiB larger.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some(c) => match with_cache(|cache| cache.pop(c)).flatten() {
                Some(p) => p,
                None => alloc_class(c),
            },
            // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
            None => unsafe { System.alloc(layout) },
        }
    }

    // Out of line: inlined into every allocation site, it made the binary 70 KiB larger.
    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some(c) => match with_cache(|cache| cache.pop(c)).flatten() {
                Some(p) => {
                    // SAFETY: the block holds at least layout.size() bytes.
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                    p
                }
                // SAFETY: a valid non-zero layout.
                None => from_system(unsafe { System.alloc_zeroed(class_layout(c)) }),
            },
            // SAFETY: the caller's layout.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    // Out of line: inlined into every allocation site, it made the binary 70 KiB larger.
    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match cached_class(layout) {
            Some(c) => {
                if with_cache(|cache| cache.push_live(c, ptr)) != Some(true) {
                    // SAFETY: the caller's block, of class `c`.
                    unsafe { dealloc_class(ptr, c) }
                }
            }
            // SAFETY: allocated by System with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    // Out of line: inlined into every allocation site, it made the binary 70 KiB larger.
    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's caller guarantees the new size, rounded up to
        // the alignment, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (cached_class(layout), cached_class(new_layout)) {
            // SAFETY: allocated by System with `layout`.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            (Some(a), Some(b)) if a == b => block(ptr.addr()),
            _ => {
                // SAFETY: a valid layout; the old block holds layout.size() bytes and
                // the new one new_size; they are distinct blocks.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_gets_the_smallest_class_that_holds_it() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(MAX_SIZE), CLASSES - 1);
        assert_eq!(class_size(CLASSES - 1), MAX_SIZE);
        for size in 1..=MAX_SIZE {
            let c = class_of(size);
            assert!(c < CLASSES, "{size}");
            assert!(
                class_size(c) >= size,
                "{size} in class {c} of {}",
                class_size(c)
            );
            assert!(
                c == 0 || class_size(c - 1) < size,
                "{size}: class {c} is not the smallest"
            );
            assert_eq!(class_size(c) % ALIGN, 0);
        }
        // Never more than a quarter wasted above 128 bytes.
        for size in 129..=MAX_SIZE {
            assert!(class_size(class_of(size)) * 4 <= size * 5 + 64, "{size}");
        }
    }

    /// A block freed is handed out again for the same class, within its budget; other
    /// layouts go to the system allocator.
    #[test]
    fn freed_blocks_are_reused_up_to_the_budget() {
        let a = ThreadCache::new();
        let l = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: matched alloc/dealloc of one layout.
        unsafe {
            let p = a.alloc(l);
            p.write_bytes(0xab, 100);
            a.dealloc(p, l);
            // Another size of the same class (112) gets the same block back.
            let l2 = Layout::from_size_align(112, 16).unwrap();
            let q = a.alloc(l2);
            assert_eq!(p, q);
            a.dealloc(q, l2);
            let zq = a.alloc_zeroed(l2);
            assert_eq!(zq, p);
            assert!(std::slice::from_raw_parts(zq, 112).iter().all(|&b| b == 0));
            a.dealloc(zq, l2);

            // Over PER_CLASS blocks of one class: the rest go to System.
            let l = Layout::from_size_align(16, 16).unwrap();
            let blocks: Vec<*mut u8> = (0..PER_CLASS as usize + 8).map(|_| a.alloc(l)).collect();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            let kept = with_cache(|c| c.counts[0]).unwrap();
            assert_eq!(kept, PER_CLASS);
            let bytes = with_cache(|c| c.bytes).unwrap();
            assert!(bytes <= BUDGET);

            // Larger and over-aligned blocks are not cached.
            for l in [
                Layout::from_size_align(MAX_SIZE + 1, 8).unwrap(),
                Layout::from_size_align(64, 64).unwrap(),
            ] {
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                a.dealloc(p, l);
                assert_eq!(with_cache(|c| c.bytes).unwrap(), bytes);
            }
        }
    }

    /// Growing and shrinking across classes and past the cached sizes keeps the bytes.
    #[test]
    fn realloc_keeps_the_contents_across_classes() {
        let a = ThreadCache::new();
        // SAFETY: each pointer is used with the layout it was last given.
        unsafe {
            let mut l = Layout::from_size_align(10, 1).unwrap();
            let mut p = a.alloc(l);
            for i in 0..10 {
                p.add(i).write(i as u8);
            }
            for size in [12, 16, 17, 200, 4096, 5000, 100_000, 3000, 40, 10] {
                p = a.realloc(p, l, size);
                assert!(!p.is_null());
                l = Layout::from_size_align(size, 1).unwrap();
                for i in 0..10 {
                    assert_eq!(p.add(i).read(), i as u8, "after realloc to {size}");
                }
            }
            a.dealloc(p, l);
        }
    }

    /// Blocks freed on another thread join that thread's cache; an exiting thread
    /// hands its cache back (and then keeps nothing).
    #[test]
    fn a_thread_hands_its_cache_back_when_it_exits() {
        let a = ThreadCache::new();
        let l = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: matched alloc/dealloc of one layout, the block sent between threads.
        let p = unsafe { a.alloc(l) } as usize;
        let (kept, after) = std::thread::spawn(move || {
            let a = ThreadCache::new();
            unsafe { a.dealloc(p as *mut u8, l) };
            let kept = with_cache(|c| c.counts[class_of(48)]).unwrap();
            // What the key's destructor does at the thread's exit.
            release_at_exit(ptr::null_mut());
            let q = unsafe { a.alloc(l) };
            unsafe { a.dealloc(q, l) };
            (
                kept,
                with_cache(|c| (c.bytes, c.state == State::Dead)).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(kept, 1);
        assert_eq!(after, (0, true));
        assert_ne!(EXIT_KEY.load(Ordering::Acquire), 0);
    }
}
