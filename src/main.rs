//! The binary: CGI mode when a web server started it, else the mode the command line names.
//!
//! `no_main`: the C `main` below replaces std's runtime start-up (`lang_start`). CGI mode starts
//! once per request, and that start-up (a SIGSEGV handler with its alternate stack, and the
//! main thread's stack bounds read from /proc/self/maps) was a sixth of a declared 304's
//! instructions (bench/RESULTS.md, "CGI mode's start-up"). What of it this program relies on, [`process_start::prepare`] does; see there.
#![no_main]

use std::ffi::{c_char, c_int};
use std::process::ExitCode;

use clap::Parser;
use http_conditional::{cgi, cli, process_start};

/// The process's entry point, called by the C runtime with the command line (which std reads
/// for itself, from glibc's initialisers, so `std::env::args_os` still works).
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    process_start::prepare();
    process_start::finish(std::panic::catch_unwind(run))
}

fn run() -> ExitCode {
    if cgi::invoked_by_server() {
        // Search words on the command line must never reach the full parser: see cli.
        return cli::run_for_server();
    }
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("http-conditional: {e:#}");
            ExitCode::FAILURE
        }
    }
}
