//! Writes the man pages and shell completions into a folder, from the binary's own clap
//! definition: `cargo run --example manuals -- OUT` (scripts/package.sh runs it).
//!
//! A build step rather than a hidden subcommand: clap_complete offers hidden subcommands in
//! every shell's completions, and the shipped command line stays what the contract lists.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use http_conditional::{cli::Cli, manuals};

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: manuals OUT");
        return ExitCode::from(2);
    };
    match manuals::write(Cli::command(), &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manuals: writing into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
