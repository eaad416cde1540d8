//! The process's memory between passes. A pass over a large fleet allocates and frees a lot;
//! glibc's allocator keeps freed memory in per-thread arenas and serves mid-sized buffers from
//! them, so without this the daemon would idle near its peak resident size.

/// Tunes glibc's allocator for a mostly idle daemon: one arena (the daemon spends its time
/// waiting on the network, not contending for the allocator, and every extra arena keeps free
/// memory of its own), and a fixed 64 KiB mmap threshold (by default it grows with the largest
/// buffer freed, after which response buffers land in the arena and fragment it). Call once,
/// before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Returns freed heap memory to the operating system (glibc `malloc_trim`; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim and mallinfo2 only walk the allocator's own structures; they take no
    // pointers and are safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
        let info = libc::mallinfo2();
        tracing::debug!(
            in_use_kib = info.uordblks / 1024,
            free_kib = info.fordblks / 1024,
            mmapped_kib = info.hblkhd / 1024,
            "heap after returning free memory"
        );
    }
}
