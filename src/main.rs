//! The `tresor` binary: allocator tuning, then the command line in
//! [`tresor::cli`].

use std::process::ExitCode;

/// Large buffers (sealed chunks, packs) are allocated and freed at a high
/// rate by many threads. glibc's dynamic mmap threshold would move them into
/// per-thread arenas that keep freed memory; a fixed 64 MiB threshold (above
/// the largest pack, 16 MiB plus one chunk) returns them to the OS at once (measured: peak RSS of a 1 GiB copy 517 MB → see
/// docs/ARCHITECTURE.md).
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    tresor::cli::main()
}
