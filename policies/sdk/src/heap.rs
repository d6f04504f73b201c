//! The guest's memory allocator: dlmalloc, as Rust's std uses on wasm32, except that its
//! first region is the memory the module already starts with.
//!
//! std's dlmalloc gets every region from `memory.grow`, so the first allocation of a
//! decision grows the linear memory even when the module starts with room to spare. In
//! the host's pooling allocator a growth is an `mprotect` of the grown pages, and
//! resetting the slot for the next fresh instance another, with a TLB flush each: about a
//! third of a fresh-instance decision. kbha's guest build starts modules with a heap
//! (`--initial-memory`); this allocator uses it, so a decision that fits never grows.
//! Turn it off with `default-features = false` to bring your own `#[global_allocator]`.

// A global allocator is unsafe by nature (raw memory, `GlobalAlloc` is an unsafe trait);
// everything unsafe in the SDK is in this module.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

#[cfg(target_feature = "atomics")]
compile_error!("kbha-policy-sdk's allocator assumes one thread; build without the atomics feature");

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Set by wasm-ld: the first byte after the stack and static data.
    static __heap_base: u8;
}

/// dlmalloc's system allocator: the first region runs from `__heap_base` to the end of the
/// current memory (plus grown pages if that is not enough); later ones are grown pages.
struct StartsAtHeapBase {
    started: Cell<bool>,
}

// SAFETY: `alloc` returns memory no one else uses: above `__heap_base` nothing but this
// allocator writes, and grown pages are new. Regions are never returned (`free` is false).
unsafe impl dlmalloc::Allocator for StartsAtHeapBase {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let end = wasm32::memory_size(0) * PAGE;
        let start = if self.started.replace(true) { end } else { ((&raw const __heap_base) as usize).next_multiple_of(16).min(end) };
        if end - start >= size {
            return (start as *mut u8, end - start, 0);
        }
        let pages = size.div_ceil(PAGE);
        let prev = wasm32::memory_grow(0, pages);
        if prev == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        let grown = prev * PAGE;
        // Contiguous with the unused start (always, unless other code grew the memory):
        // one region. wasm32's last page would wrap to 0; leave its last bytes out, as std does.
        let (base, mut len) = if grown == end { (start, end - start + pages * PAGE) } else { (grown, pages * PAGE) };
        if base.wrapping_add(len) == 0 {
            len -= 16;
        }
        (base as *mut u8, len, 0)
    }

    fn remap(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _oldsize: usize, _newsize: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        // Grown pages are zero, and so is the memory above `__heap_base` when the first
        // region is handed out: nothing is written there before.
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

struct Heap(UnsafeCell<dlmalloc::Dlmalloc<StartsAtHeapBase>>);

// SAFETY: wasm32 without the atomics feature (checked above) runs one thread.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(StartsAtHeapBase { started: Cell::new(false) })));

// SAFETY: one thread, and no allocation re-enters the allocator, so the `&mut` taken for
// each call is the only one.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
