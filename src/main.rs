use std::process::ExitCode;

use clap::Parser;
use http_conditional::{cgi, cli};

fn main() -> ExitCode {
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
