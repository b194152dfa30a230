//! The `holdless` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = holdless::cli::Cli::parse();
    holdless::cli::run(cli)
}
