use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use http_conditional::{cgi, request::Request};

/// Answers 304/412 for legacy CGI scripts without running them.
#[derive(Parser)]
#[command(
    name = "http-conditional",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    cgi: CgiArgs,
}

/// CGI mode (the default): `[--timeout SECONDS] [INTERPRETER] [SCRIPT]`.
#[derive(Args)]
struct CgiArgs {
    /// Seconds a script may run before 504 (default 30; the sidecar's `timeout` wins).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// `[INTERPRETER] SCRIPT`, as a shebang line or Apache passes them.
    #[arg(value_name = "ARGS", num_args = 0..)]
    positional: Vec<OsString>,
}

#[derive(Subcommand)]
enum Command {}

#[derive(Parser)]
#[command(name = "http-conditional", no_binary_name = true)]
struct CgiOnly {
    #[command(flatten)]
    cgi: CgiArgs,
}

fn cgi_options(args: CgiArgs) -> cgi::Options {
    cgi::Options {
        timeout: args.timeout,
        positional: args.positional,
    }
}

fn main() -> ExitCode {
    if cgi::invoked_by_server() {
        // Under a web server the command line may carry the visitor's search words: drop them
        // before parsing, and never let them select a subcommand or a flag's side effect.
        let request = Request::from_process_env();
        let args = cgi::own_arguments(std::env::args_os().skip(1).collect(), &request);
        return match CgiOnly::try_parse_from(args) {
            Ok(parsed) => cgi::run(cgi_options(parsed.cgi)),
            Err(e) => cgi::refuse_arguments(&e.to_string()),
        };
    }
    let cli = Cli::parse();
    match cli.command {
        None => cgi::run(cgi_options(cli.cgi)),
    }
}
