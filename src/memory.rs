//! The process's memory, as start-up sees it: how much is resident, and giving back
//! what a large load freed.

/// This process's resident memory in MB (0 where `/proc` is missing): logged at the
/// steps of start-up (the store opened, the callbacks loaded), where a large store
/// costs memory before anything is served.
pub fn resident_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096 / (1024 * 1024))
}

/// Returns memory freed so far to the operating system now rather than when mimalloc
/// (the binary's allocator) gets round to it. Loading a million open callbacks frees
/// about 100 MB of working space (the store's read buffers, the sorting of the
/// lines), which otherwise stays resident for seconds or, on threads that have ended,
/// until the allocator next looks. A few milliseconds; harmless where mimalloc is not
/// the allocator (it then holds nothing).
pub fn give_back_freed() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at
    // any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
