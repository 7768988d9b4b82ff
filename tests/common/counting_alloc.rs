//! A counting global allocator for the "no allocation after warm-up" tests. Include it with
//! `#[path = "common/counting_alloc.rs"] mod counting_alloc;` in a test file (each integration
//! test is its own binary, so the allocator affects that binary only). Only allocations made by
//! the measuring thread while counting is on are counted, so the harness's own threads do not
//! disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; counting touches only thread-locals that
// hold `Copy` values (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Counting on every thread at once (for pipelines of threads).
static COUNT_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ALL_ALLOCATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count() {
    if COUNT_ALL.load(std::sync::atomic::Ordering::Relaxed) {
        ALL_ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` made on this thread.
pub fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|a| a.get())
}

/// How many allocations every thread of the process made while `f` ran. Only meaningful in a
/// test binary that runs one test (other tests' threads would be counted too).
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn allocations_on_all_threads_during(f: impl FnOnce()) -> usize {
    use std::sync::atomic::Ordering;
    ALL_ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNT_ALL.store(true, Ordering::SeqCst);
    f();
    COUNT_ALL.store(false, Ordering::SeqCst);
    ALL_ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the tests that assert zero against a counter that can never count.
    let n = allocations_during(|| {
        let v: Vec<u64> = std::hint::black_box(vec![1, 2, 3]);
        std::hint::black_box(&v);
    });
    assert!(n >= 1);
}
