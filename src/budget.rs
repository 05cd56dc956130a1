//! A ceiling on the heap while a model loads. A few hundred bytes of ONNX can make tract build
//! gigabytes (constants folded from Range, Tile, broadcasts, Resize…); [`crate::denoiser`]'s
//! checks refuse the ways known before parsing, and this catches every other one: the binary
//! runs on [`Counting`], which counts the bytes in use, and [`Ceiling`] arms a limit on them
//! for the length of a load. Past it the process ends at once with one line and exit 2 (an
//! allocation cannot fail gracefully in Rust: without this it would abort, or first take the
//! board's memory). Nothing is written before a model loads, so nothing is left half-written.
//!
//! Without `Counting` as the global allocator (the library's own tests) a `Ceiling` does
//! nothing.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes in use.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CEILING: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The line printed when the ceiling is passed (leaked, set before the ceiling is armed).
static MESSAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MESSAGE_LEN: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed).saturating_add(n);
    if live > CEILING.load(Relaxed) {
        exceeded();
    }
}

#[cold]
fn exceeded() -> ! {
    CEILING.store(usize::MAX, Relaxed);
    let (ptr, len) = (MESSAGE.load(Relaxed), MESSAGE_LEN.load(Relaxed));
    #[cfg(unix)]
    // SAFETY: `ptr..ptr + len` is a leaked, never freed byte string (or null with len 0);
    // write(2) and _exit(2) allocate nothing.
    unsafe {
        if !ptr.is_null() {
            libc::write(2, ptr.cast(), len);
        }
        libc::_exit(2);
    }
    #[cfg(not(unix))]
    {
        let _ = (ptr, len);
        std::process::abort();
    }
}

// SAFETY: every call goes to `System` unchanged; only counters are kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes on the heap now (0 unless [`Counting`] is the global allocator).
pub fn in_use() -> usize {
    LIVE.load(Relaxed)
}

/// A limit of `extra` bytes above the heap in use now, until dropped; passing it prints
/// `message` (one line) and exits with 2.
pub struct Ceiling(());

impl Ceiling {
    pub fn arm(extra: usize, message: &str) -> Ceiling {
        let line: &'static mut [u8] = Box::leak(
            format!("edge-sample: error: {message}\n")
                .into_bytes()
                .into_boxed_slice(),
        );
        MESSAGE_LEN.store(line.len(), Relaxed);
        MESSAGE.store(line.as_mut_ptr(), Relaxed);
        CEILING.store(in_use().saturating_add(extra), Relaxed);
        Ceiling(())
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        CEILING.store(usize::MAX, Relaxed);
    }
}
