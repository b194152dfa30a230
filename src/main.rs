//! The `holdless` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a routing decision and its gRPC exchange
/// make dozens of small, short-lived allocations across two or more threads, where
/// glibc's arenas spend measurable time consolidating and locking (see
/// docs/PERFORMANCE.md for the before/after figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = holdless::cli::Cli::parse();
    holdless::cli::run(cli)
}

/// Turns transparent huge pages off for this process. mimalloc asks for them on every
/// region it maps, so each thread's heap started out with its own 2 MiB pages: an idle
/// server was about 85 MB resident instead of 37, and a start-up over a million
/// callbacks zeroed 2 MiB at a time for partly used pages (about 40 MB more resident
/// and slower). RouteCall throughput is the same either way (docs/PERFORMANCE.md).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and changes only this
    // process's memory policy; a kernel without it returns an error, which is fine.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
