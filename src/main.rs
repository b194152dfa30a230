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
    let cli = holdless::cli::Cli::parse();
    holdless::cli::run(cli)
}
