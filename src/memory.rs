//! Giving memory back after a pass. A pass over a large fleet allocates and frees a lot; glibc's
//! allocator keeps freed memory in its arenas unless asked to return it, so without this the
//! daemon would sit idle at its peak resident size until the next pass.

/// Returns freed heap memory to the operating system (glibc `malloc_trim`; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers and
    // is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
