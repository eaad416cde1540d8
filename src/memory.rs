//! The process's memory between passes. A pass over a large fleet allocates and frees a lot;
//! glibc's allocator keeps freed memory in per-thread arenas and serves mid-sized buffers from
//! them, so without this the daemon would idle near its peak resident size. Once a pass is
//! over, the code it ran (clean pages of the binary, read back from disk when next needed) is
//! handed back too: the daemon idles for hours between passes.

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

/// Asks the kernel to reclaim the read-only pages mapped from files that only this process
/// uses — the binary's code and constants, faulted in by a pass and not needed until the next
/// one (Linux `MADV_PAGEOUT`, 5.4 and later). Pages are clean, so nothing is written: the
/// kernel drops them, and reads them back from the file on the next touch. Shared libraries'
/// pages that other processes also map are left alone by the kernel. Returns the KiB advised
/// (0 where unsupported).
pub fn release_code_pages() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut advised = 0;
        for (start, end) in read_only_file_mappings(&maps) {
            // SAFETY: the range is a whole mapping of this process, read from /proc/self/maps;
            // MADV_PAGEOUT only drops clean pages, which the kernel faults back in on the next
            // access, so no memory the program uses changes. A failure (an older kernel,
            // EINVAL) leaves the pages where they are.
            let result = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT)
            };
            if result == 0 {
                advised += (end - start) as u64 / 1024;
            }
        }
        tracing::debug!(advised_kib = advised, "code pages handed back");
        advised
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// The address ranges of private, read-only mappings of files (code and constants) in a
/// `/proc/<pid>/maps` text. Writable, shared and anonymous mappings are never included.
fn read_only_file_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?.as_bytes();
            let _offset = fields.next()?;
            let _device = fields.next()?;
            let inode = fields.next()?;
            let path = fields.next()?;
            let private_read_only = perms.len() == 4 && perms[1] == b'-' && perms[3] == b'p';
            if !private_read_only || inode == "0" || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /usr/bin/ecs-renewd
55d0c0100000-55d0c0800000 r-xp 00100000 fd:01 1234 /usr/bin/ecs-renewd
55d0c0800000-55d0c0900000 rw-p 00800000 fd:01 1234 /usr/bin/ecs-renewd
55d0c0900000-55d0c0a00000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000008000 rw-s 00000000 fd:01 99 /var/lib/ecs-renewd/ledger.db-shm
7f0000010000-7f0000020000 r--s 00000000 fd:01 98 /var/lib/ecs-renewd/shared-ro
7f0000100000-7f0000200000 r-xp 00000000 00:00 0 
7ffc00000000-7ffc00001000 r-xp 00000000 00:00 0 [vdso]
7f0000300000-7f0000400000 r-xp 00028000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        assert_eq!(
            read_only_file_mappings(maps),
            vec![
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0800000),
                (0x7f0000300000, 0x7f0000400000),
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn handing_back_code_pages_lowers_the_resident_file_pages() {
        fn rss_file_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap()
        }
        let before = rss_file_kib();
        let advised = release_code_pages();
        let after = rss_file_kib();
        if advised == 0 {
            // A kernel without MADV_PAGEOUT: the call must still be harmless.
            eprintln!("MADV_PAGEOUT not supported here; RssFile {before} -> {after} KiB");
            return;
        }
        // The test binary's code is many MiB and mostly mapped by this process alone; what
        // this thread touches again right away comes back, the rest must be gone.
        assert!(
            after + 1024 <= before,
            "RssFile {before} KiB -> {after} KiB after advising {advised} KiB"
        );
    }
}
